"""EGTR: Extracting Graph from Transformer (Im et al., CVPR 2024).

A Deformable DETR detector whose decoder self-attention already relates every pair of object queries. The relation
head turns the query/key projections of every decoder self-attention layer, plus the final hidden states, into one
feature per ordered query pair, combines them with a shared sigmoid gate, and predicts predicate logits (with the
Neural-Motifs frequency bias, Zellers et al., CVPR 2018) and a connectivity logit for every pair.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from egtr.config import EGTRConfig
from egtr.models.checkpoint import Checkpoint, load_state_dict_strictly, read_checkpoint, save_model_directory
from egtr.models.deformable_detr import DeformableDetrModel, MultiscaleDeformableAttention
from egtr.preprocessing import PreprocessorConfig

logger = logging.getLogger(__name__)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _member(module: nn.Module, kind: type[ModuleT]) -> ModuleT:
    """A ModuleList entry (which PyTorch types as a plain Module) as the kind of module it was built as."""
    if not isinstance(module, kind):
        raise TypeError(f"expected a {kind.__name__}, found a {type(module).__name__}")
    return module


class MLP(nn.Module):
    """Linear layers with ReLU in between (the `DeformableDetrMLPPredictionHead` layout: `layers.0..k`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(dims, [*dims[1:], output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x

    def linear(self, index: int) -> nn.Linear:
        """Layer `index` (negative counts from the end)."""
        return _member(self.layers[index], nn.Linear)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


@dataclass
class EGTROutput:
    """Outputs of `EGTR.forward`. B = batch, N = queries, C = classes, R = predicates, L = decoder layers."""

    logits: torch.Tensor  # (B, N, C) final-layer class logits (sigmoid/focal head, no "no-object" class)
    pred_boxes: torch.Tensor  # (B, N, 4) normalised (cx, cy, w, h) relative to the unpadded image
    pred_rel: torch.Tensor  # (B, N, N, R) sigmoid(relation logits [- logit adjustment]); [b, subject, object, p]
    pred_connectivity: torch.Tensor  # (B, N, N, 1) sigmoid(connectivity logits)
    rel_logits: torch.Tensor  # (B, N, N, R) relation logits incl. frequency bias, before logit adjustment (loss input)
    connectivity_logits: torch.Tensor  # (B, N, N, 1)
    aux_logits: list[torch.Tensor] = field(default_factory=list)  # L-1 x (B, N, C): decoder layers 0..L-2
    aux_pred_boxes: list[torch.Tensor] = field(default_factory=list)  # L-1 x (B, N, 4)
    rel_gates: torch.Tensor | None = None  # (L+1,) mean gate value of each slot (for logging)
    decoder_hidden_states: torch.Tensor | None = None  # (B, L+1, N, D)
    self_attention_queries: torch.Tensor | None = None  # (B, L, N, D) unscaled q projections
    self_attention_keys: torch.Tensor | None = None  # (B, L, N, D)
    init_reference_points: torch.Tensor | None = None  # (B, N, 2)
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, D)

    @property
    def last_hidden_state(self) -> torch.Tensor:
        if self.decoder_hidden_states is None:
            raise ValueError("this EGTROutput carries no decoder_hidden_states")
        return self.decoder_hidden_states[:, -1]

    def __getitem__(self, key: str) -> torch.Tensor:  # dict-style access, as the losses accept either
        return getattr(self, key)


class EGTR(nn.Module):
    """The EGTR scene graph generator.

    The attribute names give the official state dict layout (`model.*`, `class_embed.*`, `proj_q.*`, ...), so the
    released checkpoints load strictly. Build from a config, or with `EGTR.from_pretrained(path)`.
    """

    def __init__(self, config: EGTRConfig | None = None):
        super().__init__()
        self.config = config = (config or EGTRConfig()).validate()
        # The preprocessing the weights were trained for, when known (set by from_pretrained, kept by save_pretrained).
        self.preprocessor: PreprocessorConfig | None = None
        # The path it was loaded from (`from_pretrained`): where its evaluation reports are looked for on upload.
        self.source: Path | None = None
        d_model, num_classes, num_predicates = config.d_model, config.num_labels, config.num_rel_labels
        # Frequency tables: non-trainable parameters, as in the original (they count in the parameter total).
        self.triplet_dist = nn.Parameter(
            torch.zeros(num_classes + 1, num_classes + 1, num_predicates), requires_grad=False
        )
        self.rel_dist = nn.Parameter(torch.full((num_predicates,), 1.0 / num_predicates), requires_grad=False)
        self.model = DeformableDetrModel(config)
        # Without box refinement the detection heads are one module shared by every decoder layer; the ModuleList
        # repeats it so that the state dict has the official `class_embed.0..L-1` keys.
        class_embed = nn.Linear(d_model, num_classes)
        bbox_embed = MLP(d_model, d_model, 4, num_layers=3)
        self.class_embed = nn.ModuleList([class_embed] * config.decoder_layers)
        self.bbox_embed = nn.ModuleList([bbox_embed] * config.decoder_layers)
        # Relation head.
        self.proj_q = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(config.decoder_layers))
        self.proj_k = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(config.decoder_layers))
        self.final_sub_proj = nn.Linear(d_model, d_model)
        self.final_obj_proj = nn.Linear(d_model, d_model)
        self.rel_predictor_gate = nn.Linear(2 * d_model, 1)
        self.rel_predictor = MLP(2 * d_model, d_model, num_predicates, num_layers=3)
        self.connectivity_layer = MLP(2 * d_model, d_model, 1, num_layers=3)
        self.reset_parameters()
        if config.freeze_backbone_stem:
            self.freeze_backbone_stem()

    # ------------------------------------------------------------------ construction
    def reset_parameters(self) -> None:
        """Initialisation for training from scratch (reference §2.7), with quirk Q12 fixed.

        Linear/conv layers of the transformer and heads: N(0, 0.02), bias 0 (the HF init the original used);
        deformable attention and reference points: the Deformable DETR init; level embeddings N(0, 1). Unlike the
        original, the class prior bias (-log 99) and the zero init of the box head's last layer survive, and the
        backbone convolutions get He init instead of N(0, 0.02), so a model built from scratch can actually train.
        Loading a checkpoint overwrites all of this.
        """
        for name, module in self.named_modules():
            if name.startswith("model.backbone"):
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, MultiscaleDeformableAttention):
                module.reset_parameters()
        nn.init.xavier_uniform_(self.model.reference_points.weight, gain=1.0)
        nn.init.zeros_(self.model.reference_points.bias)
        nn.init.normal_(self.model.level_embed)
        prior_probability = 0.01  # focal-loss prior (Lin et al., ICCV 2017)
        class_head = _member(self.class_embed[0], nn.Linear)
        nn.init.constant_(class_head.bias, -math.log((1 - prior_probability) / prior_probability))
        last_box_layer = _member(self.bbox_embed[0], MLP).linear(-1)
        nn.init.zeros_(last_box_layer.weight)
        nn.init.zeros_(last_box_layer.bias)
        with torch.no_grad():
            last_box_layer.bias[2:] = -2.0  # start with small boxes, as Deformable DETR does

    def freeze_backbone_stem(self) -> None:
        """conv1 and layer1 of the ResNet are not trained (every backbone parameter outside layer2-4)."""
        for name, parameter in self.model.backbone.named_parameters():
            if not any(stage in name for stage in ("layer2", "layer3", "layer4")):
                parameter.requires_grad_(False)

    def set_attention_form(self, form: str) -> EGTR:
        """Pick the deformable attention implementation of every layer (`MultiscaleDeformableAttention.form`:
        "auto", "grid_sample" or "gather"); the function is the same, float rounding aside. Returns self."""
        if form not in MultiscaleDeformableAttention.FORMS:
            raise ValueError(f"attention form must be one of {MultiscaleDeformableAttention.FORMS}, got {form!r}")
        for module in self.modules():
            if isinstance(module, MultiscaleDeformableAttention):
                module.form = form
        return self

    def set_frequency_tables(self, triplet_dist: torch.Tensor, rel_dist: torch.Tensor) -> None:
        """Install the frequency-bias table (C+1, C+1, R) and predicate prior (R,) computed from training data."""
        if triplet_dist.shape != self.triplet_dist.shape or rel_dist.shape != self.rel_dist.shape:
            raise ValueError(
                f"frequency tables of shape {tuple(triplet_dist.shape)}/{tuple(rel_dist.shape)} do not fit the model "
                f"({tuple(self.triplet_dist.shape)}/{tuple(self.rel_dist.shape)})"
            )
        with torch.no_grad():
            self.triplet_dist.copy_(triplet_dist)
            self.rel_dist.copy_(rel_dist)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, map_location: str | torch.device = "cpu", *, revision: str | None = None
    ) -> EGTR:
        """Load a model in any layout `egtr.models.checkpoint.read_checkpoint` knows: our directory, the official
        EGTR artifact or one of its `.ckpt` files, a Lightning checkpoint of `egtr train`, a training run or pass,
        or a model on the Hugging Face Hub by name (`"org/name"`, at `revision`; `egtr.models.hub`).

        Loading is strict: a file that does not fit raises `CheckpointError` saying what it looks like. The model
        comes back in eval mode, with `preprocessor` set to the preprocessing recorded with it (None: the paper's).
        """
        return cls.from_checkpoint(read_checkpoint(path, revision), map_location)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, map_location: str | torch.device = "cpu") -> EGTR:
        """Build the model of an already read `Checkpoint` and load its weights strictly."""
        model = cls(checkpoint.config)
        load_state_dict_strictly(model, checkpoint.state_dict, str(checkpoint.weights_file))
        model.preprocessor = checkpoint.preprocessor
        model.source = checkpoint.source
        logger.info("loaded %s (%s)", checkpoint.weights_file, checkpoint.layout)
        return model.to(map_location).eval()

    def save_pretrained(self, directory: str | Path, preprocessor: PreprocessorConfig | None = None) -> Path:
        """Write `model.safetensors`, `preprocessor_config.json` and `config.json` (each atomically).

        The preprocessing written is `preprocessor`, else the one the model was loaded with, else the paper's, so
        that a saved and reloaded model prepares images exactly as before.
        """
        recorded = preprocessor or self.preprocessor or PreprocessorConfig()
        return save_model_directory(self, self.config, directory, recorded)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload this model (config, safetensors, preprocessing, a generated model card quoting the evaluation
        reports of the run it was loaded from) to the Hugging Face Hub repository `repo_id`; `options` are
        `egtr.models.publish.push_to_hub`'s. Returns the commit's URL."""
        from egtr.models.publish import push_to_hub

        return push_to_hub(self, repo_id, **options)

    # ------------------------------------------------------------------ forward
    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> EGTROutput:
        """
        Args:
            pixel_values: (B, 3, H, W) ImageNet-normalised images, zero-padded bottom/right to a common size.
            pixel_mask: (B, H, W), 1/True = real pixel, 0/False = padding; None means no padding.

        Returns:
            `EGTROutput`; `pred_rel[b, i, j]` scores query i as subject and query j as object.
        """
        if pixel_mask is None:
            pixel_mask = torch.ones(
                pixel_values.shape[0], *pixel_values.shape[2:], dtype=torch.long, device=pixel_values.device
            )
        body = self.model(pixel_values, pixel_mask)
        layer_outputs = body.decoder_hidden_states[:, 1:]  # (B, L, N, D)
        reference = inverse_sigmoid(body.init_reference_points)  # (B, N, 2), the same for every layer
        all_logits, all_boxes = [], []
        for layer in range(layer_outputs.shape[1]):
            hidden = layer_outputs[:, layer]
            all_logits.append(self.class_embed[layer](hidden))
            box_logits = self.bbox_embed[layer](hidden)
            # Only the centre is offset by the reference point; width and height are predicted directly.
            box_logits = torch.cat([box_logits[..., :2] + reference, box_logits[..., 2:]], dim=-1)
            all_boxes.append(box_logits.sigmoid())
        logits = all_logits[-1]

        rel_logits, connectivity_logits, gates = self.relation_head(
            body.self_attention_queries, body.self_attention_keys, layer_outputs[:, -1]
        )
        if self.config.use_freq_bias:
            rel_logits = rel_logits + self.frequency_bias(logits)
        adjusted = rel_logits
        if self.config.logit_adjustment:
            # Post-hoc logit adjustment (Menon et al., ICLR 2021), applied after the loss in the original.
            adjusted = rel_logits - self.config.logit_adj_tau * self.rel_dist.log()
        return EGTROutput(
            logits=logits,
            pred_boxes=all_boxes[-1],
            pred_rel=adjusted.sigmoid(),
            pred_connectivity=connectivity_logits.sigmoid(),
            rel_logits=rel_logits,
            connectivity_logits=connectivity_logits,
            aux_logits=all_logits[:-1],
            aux_pred_boxes=all_boxes[:-1],
            rel_gates=gates,
            decoder_hidden_states=body.decoder_hidden_states,
            self_attention_queries=body.self_attention_queries,
            self_attention_keys=body.self_attention_keys,
            init_reference_points=body.init_reference_points,
            encoder_last_hidden_state=body.encoder_last_hidden_state,
        )

    def frequency_bias(self, logits: torch.Tensor) -> torch.Tensor:
        """triplet_dist[argmax class of subject, argmax class of object] -> (B, N, N, R)."""
        predicted_class = logits.argmax(-1)  # (B, N)
        return self.triplet_dist[predicted_class[:, :, None], predicted_class[:, None, :]]

    def _slot_features(
        self, queries: torch.Tensor, keys: torch.Tensor, last_hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Subject and object features of every slot (L decoder layers + the final hidden states).

        Returns:
            subjects, objects: (B, L+1, N, D); subjects[:, l] = proj_q[l](q_l), objects[:, l] = proj_k[l](k_l), and
            the last slot holds final_sub_proj(h_L) / final_obj_proj(h_L).
        """
        subject_terms = [projection(queries[:, layer]) for layer, projection in enumerate(self.proj_q)]
        object_terms = [projection(keys[:, layer]) for layer, projection in enumerate(self.proj_k)]
        subject_terms.append(self.final_sub_proj(last_hidden))
        object_terms.append(self.final_obj_proj(last_hidden))
        return torch.stack(subject_terms, 1), torch.stack(object_terms, 1)

    def relation_head(
        self, queries: torch.Tensor, keys: torch.Tensor, last_hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pair features from every decoder layer's q/k plus the final hidden states (paper §3.2), factorised.

        The original concatenates [subject_i ; object_j] for every pair and slot, a (B, N, N, L+1, 2D) tensor
        (573 MB per image at N=200), gates it with one shared Linear(2D -> 1) and sums over slots before the MLPs.
        Both the gate and the first layer of each MLP are linear in the concatenation, so they split into a
        subject term plus an object term:

            gate[i, j, s] = sigmoid(w_sub . S[s, i] + w_obj . O[s, j] + b)
            W [sum_s gate[i,j,s] [S[s,i]; O[s,j]]] = sum_s gate[i,j,s] (W_sub S[s,i]) + sum_s gate[i,j,s] (W_obj O[s,j])

        which is the same function (up to float rounding) computed per node instead of per pair.
        `relation_head_dense` is the straightforward form; tests check that both agree.

        Args:
            queries: (B, L, N, D) self-attention query projections of every decoder layer.
            keys: (B, L, N, D) the key projections.
            last_hidden: (B, N, D) final decoder output.

        Returns:
            relation logits (B, N, N, R) without frequency bias, connectivity logits (B, N, N, 1), mean gate per
            slot (L+1,).
        """
        if self.config.dense_relation_head:
            return self.relation_head_dense(queries, keys, last_hidden)
        subjects, objects = self._slot_features(queries, keys, last_hidden)  # (B, S, N, D), S = L+1 slots
        d_model = subjects.shape[-1]
        gate_weight = self.rel_predictor_gate.weight[0]  # (2D,)
        gate_logits = (
            (subjects @ gate_weight[:d_model])[:, :, :, None]  # (B, S, N_subject, 1)
            + (objects @ gate_weight[d_model:])[:, :, None, :]  # (B, S, 1, N_object)
            + self.rel_predictor_gate.bias
        )
        gates = gate_logits.sigmoid().permute(0, 2, 3, 1).contiguous()  # (B, N_subject, N_object, S)
        # First layers of the relation and connectivity MLPs as one (2H, 2D) map, split into subject/object halves.
        first_relation, first_connectivity = self.rel_predictor.linear(0), self.connectivity_layer.linear(0)
        weight = torch.cat([first_relation.weight, first_connectivity.weight], 0)  # (2H, 2D)
        bias = torch.cat([first_relation.bias, first_connectivity.bias], 0)  # (2H,)
        subject_hidden = (subjects @ weight[:, :d_model].T).transpose(1, 2).contiguous()  # (B, N, S, 2H)
        object_hidden = (objects @ weight[:, d_model:].T).transpose(1, 2).contiguous()  # (B, N, S, 2H)
        # The slot sums are batched matmuls with contiguous operands (an einsum picks strided kernels that are
        # 10x slower on CPU): per subject i, gates[i] (N_object, S) @ subject_hidden[i] (S, 2H), and per object j,
        # gates[:, j] (N_subject, S) @ object_hidden[j].
        hidden = torch.matmul(gates, subject_hidden)  # (B, N_subject, N_object, 2H)
        hidden += torch.matmul(gates.transpose(1, 2).contiguous(), object_hidden).transpose(1, 2)
        hidden = (hidden + bias).relu()  # (B, N, N, 2H)
        relation_hidden, connectivity_hidden = hidden.split(first_relation.out_features, dim=-1)
        relation_logits = self._mlp_tail(self.rel_predictor, relation_hidden)
        connectivity_logits = self._mlp_tail(self.connectivity_layer, connectivity_hidden)
        return relation_logits, connectivity_logits, gates.detach().mean((0, 1, 2))

    @staticmethod
    def _mlp_tail(mlp: MLP, hidden: torch.Tensor) -> torch.Tensor:
        """The layers of `mlp` after the first (whose ReLU output is `hidden`)."""
        for index, layer in enumerate(mlp.layers[1:], start=1):
            hidden = layer(hidden)
            if index < len(mlp.layers) - 1:
                hidden = hidden.relu()
        return hidden

    def relation_head_dense(
        self, queries: torch.Tensor, keys: torch.Tensor, last_hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The straightforward relation head of the original: materialises the (B, N, N, L+1, 2D) pair tensor."""
        subjects, objects = self._slot_features(queries, keys, last_hidden)
        batch_size, slots, num_queries, d_model = subjects.shape
        subjects = subjects.transpose(1, 2)  # (B, N, S, D)
        objects = objects.transpose(1, 2)
        # relation_source[b, i, j, slot] = [subject_i ; object_j]  -> (B, N, N, S, 2D)
        relation_source = torch.cat(
            [
                subjects[:, :, None].expand(batch_size, num_queries, num_queries, slots, d_model),
                objects[:, None, :].expand(batch_size, num_queries, num_queries, slots, d_model),
            ],
            dim=-1,
        )
        gates = self.rel_predictor_gate(relation_source).sigmoid()  # (B, N, N, S, 1), one gate shared by all slots
        pair_features = (gates * relation_source).sum(dim=-2)  # (B, N, N, 2D)
        return (
            self.rel_predictor(pair_features),
            self.connectivity_layer(pair_features),
            gates.detach().mean((0, 1, 2, 4)),
        )
