"""The AVISM training loss: frame-level set loss, video-level set loss, similarity loss.

Letters: B clips, T frames, Dl frame-decoder predictions (initial queries + one per layer),
Lf frame-query layers fed to the video module (the last Lf frame-decoder predictions),
Lv video-decoder layers, fQ / cQ frame / video queries, K+1 classes, C embedding size,
Hm x Wm prediction grid, M matched pairs, P points.

Frame level (Mask2Former): each of the B*T frames is matched on its own, for every one of the
Dl predictions (deep supervision). Video level (VITA): each (frame-query layer, clip) pair is
matched over all T frames, for every video-decoder layer. Both: cross-entropy with a reduced
no-object weight, BCE and dice on importance-sampled points, normalised by the number of GT
masks (averaged over processes under DDP). Similarity (VITA): the matched frame-query
embeddings of the last Lf frame predictions and the matched video-query embeddings of the
last video layer, per (layer, clip) group; BCE of every pairwise dot product against
"same GT track".
Mask quality (an avis option, models with `mask_quality`): for every matched video query of
every video layer, BCE between its predicted IoU logit and the spatio-temporal IoU of its
hard mask (logit > 0) with its GT track on the prediction grid (detached target).
Twin weight (an avis option, `twin_weight` w > 0): in the mask BCE of a matched prediction,
the pixels that belong to another target of the same class (the other guitar of a pair, in
the frames where it is a target) weigh 1 + w instead of 1: covering a look-alike instance
costs more than covering background. Dice and matching are unchanged.
Instance embedding (an avis option, models with `instance_embed_dim`): the discriminative
loss of avis.losses.embedding on the per-pixel embeddings of both mask-feature maps, with
every frame's present GT instances as clusters (no matching involved); with
`embed_scope="clip"`, one cluster per instance over all frames of its clip.
Mask pilots (an avis option, models with `mask_pilots`): `pilot_queries` makes the batch's
pilot queries (avis.losses.pilots) for the model's forward; each pilot's predictions after
every decoder layer (not the initial one, made before it attended anywhere) get CE, BCE and
dice against the target it stands for (no matching; CE over real pilots only), weighted
like the frame terms times `pilot`, normalised by the number of frame targets.
Across frames (an avis option, `cross_frame_weight` w > 0, models with per-frame mask
embeddings): for every video-decoder layer, each matched track's mask embedding of frame t-1
(cyclically) is read on the video mask features of frame t and gets BCE and dice against the
track's target in frame t, weighted like the video terms times w. A track's embedding in one
frame must then find its own instance in the clip's other frames too, not only where it was
read: it is pushed towards what stays with the instance (its look, its sound) and away from
the other look-alike of its class. The training outputs carry the mask features for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from avis.data.batch import ClipTargets
from avis.losses.embedding import EMBED_SCOPES, discriminative_loss
from avis.losses.functional import dice_loss, sigmoid_bce_loss
from avis.losses.matcher import HungarianMatcher, Match, MatchTarget, resample_to_grid
from avis.losses.pilots import make_pilot_queries
from avis.losses.points import importance_sampled_coords, point_sample
from avis.losses.targets import (
    VideoTargets,
    count_frame_targets,
    frame_match_targets,
    prepare_video_targets,
)
from avis.models.frame_decoder import PilotQueries
from avis.models.outputs import AVISMOutput, FrameOutput, VideoOutput

OFFICIAL_SIM_WEIGHT = 1.0  # the official code never applies the configured 0.5 (key mismatch)


@dataclass
class LossWeights:
    class_weight: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    sim: float = 0.5
    quality: float = 1.0  # models with `mask_quality` only
    embed: float = 1.0  # models with `instance_embed_dim` only
    pilot: float = 1.0  # models with `mask_pilots` only: factor on the pilot CE, BCE, dice


@dataclass
class LossResult:
    total: Tensor  # scalar, what to backpropagate
    terms: dict[str, Tensor] = field(default_factory=dict)  # weighted terms, summed over layers


def mean_over_processes(value: float, device: torch.device) -> float:
    """The mean of a per-process count over all DDP processes (>= 1)."""
    count = torch.tensor([value], dtype=torch.float32, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count /= dist.get_world_size()
    return max(float(count.item()), 1.0)


def class_weights(num_classes: int, no_object_weight: float) -> Tensor:
    """(K+1,) CE weights: 1 for every class, `no_object_weight` for the no-object class."""
    if no_object_weight <= 0:
        raise ValueError(f"no-object weight must be > 0, got {no_object_weight}")
    weights = torch.ones(num_classes + 1)
    weights[-1] = no_object_weight
    return weights


class AVISMCriterion:
    """Computes `LossResult` from model outputs and the batch's targets (outside forward)."""

    def __init__(
        self,
        num_classes: int,
        weights: LossWeights | None = None,
        no_object_weight: float = 0.1,
        frame_no_object_weight: float | None = None,  # avis option: None = no_object_weight
        num_points: int | None = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        official_quirks: bool = False,
        anchor_cost: float = 0.0,  # avis option: see avis.losses.matcher
        twin_weight: float = 0.0,  # avis option: see the module docstring
        pilot_label_noise: float = 0.2,  # mask pilots: see avis.losses.pilots
        pilot_shift: float = 0.2,
        embed_scope: str = "frame",  # instance embeddings: one mean per frame or per clip
        cross_frame_weight: float = 0.0,  # avis option: see the module docstring
    ) -> None:
        if not cross_frame_weight >= 0:  # NaN too
            raise ValueError(f"cross_frame_weight must be >= 0, got {cross_frame_weight}")
        self.cross_frame_weight = cross_frame_weight
        if twin_weight < 0:
            raise ValueError(f"twin_weight must be >= 0, got {twin_weight}")
        self.twin_weight = twin_weight
        if embed_scope not in EMBED_SCOPES:
            raise ValueError(f"embed_scope must be one of {sorted(EMBED_SCOPES)}, got {embed_scope!r}")
        self.embed_parts = EMBED_SCOPES[embed_scope]
        self.pilot_label_noise = pilot_label_noise
        self.pilot_shift = pilot_shift
        self.num_classes = num_classes
        self.weights = weights or LossWeights()
        self.sim_weight = OFFICIAL_SIM_WEIGHT if official_quirks else self.weights.sim
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.official_quirks = official_quirks
        # CE class weights of the video level and of the frame level (the no-object class last)
        self.class_weights = class_weights(num_classes, no_object_weight)
        self.frame_class_weights = class_weights(
            num_classes,
            no_object_weight if frame_no_object_weight is None else frame_no_object_weight,
        )
        self.matcher = HungarianMatcher(
            self.weights.class_weight, self.weights.mask, self.weights.dice, num_points, anchor_cost
        )

    def __call__(self, outputs: AVISMOutput, targets: list[ClipTargets]) -> LossResult:
        frame, video = outputs.frame, outputs.video
        num_clips = len(targets)
        num_frames = frame.pred_logits.shape[1] // num_clips
        num_frame_layers = video.pred_logits.shape[1]  # Lf
        device = frame.pred_logits.device
        videos = [
            prepare_video_targets(t.to(device), self.num_classes, self.official_quirks)
            for t in targets
        ]

        # Frame level: Dl predictions, B*T items each.
        frame_items = frame_match_targets(videos, num_frames)
        num_frame_masks = mean_over_processes(count_frame_targets(videos), device)
        terms: dict[str, Tensor | float] = dict.fromkeys(("frame_ce", "frame_mask", "frame_dice"), 0.0)
        frame_matches: list[list[Match]] = []
        for logits, masks in zip(frame.pred_logits, frame.pred_masks):
            masks = masks.unsqueeze(2)  # (B*T, fQ, 1, Hm, Wm)
            matches = self.matcher(logits, masks, frame_items)
            frame_matches.append(matches)
            ce, bce, dice = self.set_losses(
                logits, masks, frame_items, matches, num_frame_masks, self.frame_class_weights
            )
            terms["frame_ce"] = terms["frame_ce"] + ce
            terms["frame_mask"] = terms["frame_mask"] + bce
            terms["frame_dice"] = terms["frame_dice"] + dice
        if frame.pilot_logits is not None and frame.pilot_masks is not None:
            terms.update(self.pilot_losses(frame, frame_items, num_frame_masks))

        # Video level: Lv layers, Lf*B items each (layer-major: index l*B + b).
        video_items = [v.as_match_target() for v in videos] * num_frame_layers
        num_video_masks = mean_over_processes(
            sum(len(v.labels) for v in videos) * num_frame_layers, device
        )
        terms.update(dict.fromkeys(("video_ce", "video_mask", "video_dice"), 0.0))
        quality = video.pred_quality  # (Lv, Lf, B, cQ) or None
        if quality is not None:
            terms["video_quality"] = 0.0
        across = self.cross_frame_weight > 0 and num_frames > 1
        if across:
            terms.update(dict.fromkeys(("across_mask", "across_dice"), 0.0))
        video_matches: list[Match] = []
        for layer, (logits, masks) in enumerate(zip(video.pred_logits, video.pred_masks)):
            logits, masks = logits.flatten(0, 1), masks.flatten(0, 1)  # (Lf*B, cQ, ...)
            video_matches = self.matcher(logits, masks, video_items)
            ce, bce, dice = self.set_losses(
                logits, masks, video_items, video_matches, num_video_masks, self.class_weights
            )
            terms["video_ce"] = terms["video_ce"] + ce
            terms["video_mask"] = terms["video_mask"] + bce
            terms["video_dice"] = terms["video_dice"] + dice
            if quality is not None:
                terms["video_quality"] = terms["video_quality"] + self.quality_loss(
                    quality[layer].flatten(0, 1), masks, video_items, video_matches, num_video_masks
                )
            if across:
                bce, dice = self.cross_frame_losses(
                    video, layer, video_items, video_matches, num_video_masks
                )
                terms["across_mask"] = terms["across_mask"] + bce
                terms["across_dice"] = terms["across_dice"] + dice

        terms["sim"] = self.similarity_loss(
            outputs, videos, frame_matches[-num_frame_layers:], video_matches
        )
        if outputs.pixel_embed is not None:
            terms["embed"] = self.embedding_loss(outputs.pixel_embed, videos)
        weighted = {name: value * self.term_weight(name) for name, value in terms.items()}
        total = sum(weighted.values())
        # every term is a Tensor by now: each loop above runs at least once (Dl, Lv >= 1)
        return LossResult(total=cast(Tensor, total), terms=cast("dict[str, Tensor]", weighted))

    def term_weight(self, name: str) -> float:
        if name == "sim":
            return self.sim_weight
        if name == "video_quality":
            return self.weights.quality
        if name == "embed":
            return self.weights.embed
        level, kind = name.split("_")
        factor = {"pilot": self.weights.pilot, "across": self.cross_frame_weight}.get(level, 1.0)
        return {
            "ce": self.weights.class_weight,
            "mask": self.weights.mask,
            "dice": self.weights.dice,
        }[kind] * factor

    def pilot_queries(
        self, targets: list[ClipTargets], grid: tuple[int, int]
    ) -> PilotQueries | None:
        """The mask-pilot queries of a batch's B*T frames on the (Hm, Wm) mask grid (all padding
        when no frame has a target); pass them to the model's forward."""
        videos = [
            prepare_video_targets(t, self.num_classes, self.official_quirks) for t in targets
        ]
        num_frames = targets[0].masks.shape[1] if targets else 0
        return make_pilot_queries(
            frame_match_targets(videos, num_frames),
            grid,
            self.num_classes,
            self.pilot_label_noise,
            self.pilot_shift,
        )

    def pilot_losses(
        self, frame: FrameOutput, items: list[MatchTarget], num_masks: float
    ) -> dict[str, Tensor]:
        """CE, BCE and dice of the pilots (pilot g of frame i = target g of frame i), summed
        over the predictions after each decoder layer."""
        assert frame.pilot_logits is not None and frame.pilot_masks is not None
        device = frame.pilot_logits.device
        # pilot g of frame i = target g of frame i; class-less targets (official quirk) have none
        own = [torch.nonzero(item.labels.cpu() < self.num_classes).flatten() for item in items]
        matches = [(slots, slots) for slots in own]
        item_idx = torch.cat([torch.full_like(slots, i) for i, slots in enumerate(own)]).to(device)
        slot_idx = torch.cat(own).to(device)
        labels = torch.cat([item.labels.cpu()[slots] for item, slots in zip(items, own)])
        labels = labels.to(device)  # (M,)
        terms: dict[str, Tensor] = {}
        for logits, masks in zip(frame.pilot_logits[1:], frame.pilot_masks[1:]):
            picked = logits[item_idx, slot_idx].float()  # (M, K+1)
            ce = F.cross_entropy(picked, labels, reduction="sum") / num_masks
            bce, dice = self.mask_losses(masks.unsqueeze(2), items, matches, num_masks)
            for name, value in (("pilot_ce", ce), ("pilot_mask", bce), ("pilot_dice", dice)):
                terms[name] = terms[name] + value if name in terms else value
        return terms

    def set_losses(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        items: list[MatchTarget],
        matches: list[Match],
        num_masks: float,
        class_weights: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """CE (with `class_weights`, (K+1,); default: the video level's), BCE and dice of one
        prediction layer.

        pred_logits (I, Q, K+1), pred_masks (I, Q, T, Hm, Wm) -> three scalars.
        """
        num_items, num_queries = pred_logits.shape[:2]
        device = pred_logits.device
        target_classes = torch.full(
            (num_items, num_queries), self.num_classes, dtype=torch.int64, device=device
        )
        for item, ((src, tgt), target) in enumerate(zip(matches, items)):
            target_classes[item, src.to(device)] = target.labels[tgt.to(device)]
        ce = F.cross_entropy(
            pred_logits.float().transpose(1, 2),
            target_classes,
            (self.class_weights if class_weights is None else class_weights).to(device),
        )
        return (ce, *self.mask_losses(pred_masks, items, matches, num_masks))

    def mask_losses(
        self,
        pred_masks: Tensor,
        items: list[MatchTarget],
        matches: list[Match],
        num_masks: float,
    ) -> tuple[Tensor, Tensor]:
        """BCE and dice of the matched masks: pred_masks (I, Q, T, Hm, Wm) -> two scalars."""
        device = pred_masks.device
        item_parts, src_parts, tgt_masks, twin_masks = [], [], [], []
        for item, ((src, tgt), target) in enumerate(zip(matches, items)):
            src, tgt = src.to(device), tgt.to(device)
            item_parts.append(torch.full_like(src, item))
            src_parts.append(src)
            tgt_masks.append(target.masks[tgt])
            if self.twin_weight > 0:
                twin_masks.append(same_class_others(target, self.num_classes)[tgt])
        item_idx, src_idx = torch.cat(item_parts), torch.cat(src_parts)
        if item_idx.numel() == 0:
            zero = pred_masks.float().sum() * 0.0  # keeps every mask parameter in the graph
            return zero, zero
        src = pred_masks[item_idx, src_idx].float()  # (M, T, Hm, Wm)
        num_matched = src.shape[0]
        tgt = torch.cat(tgt_masks)  # (M, T, Ht, Wt)
        twins = torch.cat(twin_masks) if twin_masks else None  # (M, T, Ht, Wt) or None
        point_weights = None
        if self.num_points is None:  # dense: every cell of the prediction grid
            point_logits = src.reshape(num_matched, -1)  # (M, T*Hm*Wm)
            grid = (src.shape[-2], src.shape[-1])  # (Hm, Wm)
            point_labels = resample_to_grid(tgt, grid).reshape(num_matched, -1)
            if twins is not None:
                point_weights = resample_to_grid(twins, grid).reshape(num_matched, -1)
        else:
            src = src.flatten(0, 1).unsqueeze(1)  # (M*T, 1, Hm, Wm)
            tgt = tgt.float().flatten(0, 1).unsqueeze(1)  # (M*T, 1, Ht, Wt)
            with torch.no_grad():
                coords = importance_sampled_coords(
                    src, self.num_points, self.oversample_ratio, self.importance_sample_ratio
                )  # (M*T, P, 2)
                point_labels = point_sample(tgt, coords).reshape(num_matched, -1)  # (M, T*P)
                if twins is not None:
                    twins = twins.flatten(0, 1).unsqueeze(1)  # (M*T, 1, Ht, Wt)
                    point_weights = point_sample(twins, coords).reshape(num_matched, -1)
            point_logits = point_sample(src, coords).reshape(num_matched, -1)  # (M, T*P)
        if point_weights is not None:
            point_weights = 1.0 + self.twin_weight * point_weights  # (M, P)
        return (
            sigmoid_bce_loss(point_logits, point_labels, num_masks, point_weights),
            dice_loss(point_logits, point_labels, num_masks),
        )

    def cross_frame_losses(
        self,
        video: VideoOutput,
        layer: int,
        items: list[MatchTarget],
        matches: list[Match],
        num_masks: float,
    ) -> tuple[Tensor, Tensor]:
        """BCE and dice of the matched tracks' masks read across frames (module docstring) for
        video-decoder layer `layer`; items and matches are that layer's (index l*B + b)."""
        embed = video.pred_mask_embed[layer]  # (Lf, B, cQ, T, Cm)
        features = video.mask_features  # (B, T, Cm, Hm, Wm)
        if features is None or embed.dim() != 5 or embed.shape[-1] != features.shape[2]:
            raise ValueError(
                "cross_frame_weight needs a model with per-frame mask embeddings "
                "(per_frame_mask_embed) whose training outputs carry the video mask features"
            )
        num_clips = features.shape[0]
        embed = embed.flatten(0, 1).roll(1, dims=2)  # (Lf*B, cQ, T, Cm): frame t gets t-1's
        parts, local = [], []
        for item, (src, tgt) in enumerate(matches):
            src = src.to(embed.device)
            # (m, T, Cm) x (T, Cm, Hm, Wm) -> (m, T, Hm, Wm), matched tracks only
            parts.append(torch.einsum("mtc,tchw->mthw", embed[item, src], features[item % num_clips]))
            local.append((torch.arange(len(src)), tgt))
        most = max(1, max(len(part) for part in parts))
        padded = torch.stack(
            [F.pad(part, (0, 0, 0, 0, 0, 0, 0, most - len(part))) for part in parts]
        )  # (Lf*B, most, T, Hm, Wm); rows past an item's matches are never read
        return self.mask_losses(padded, items, local, num_masks)

    def quality_loss(
        self,
        pred_quality: Tensor,  # (I, Q) IoU logits
        pred_masks: Tensor,  # (I, Q, T, Hm, Wm) mask logits
        items: list[MatchTarget],
        matches: list[Match],
        num_masks: float,
    ) -> Tensor:
        """BCE of the matched queries' IoU logits against their masks' actual IoU."""
        device = pred_quality.device
        logits, targets = [], []
        for item, ((src, tgt), target) in enumerate(zip(matches, items)):
            if len(src) == 0:
                continue
            src, tgt = src.to(device), tgt.to(device)
            with torch.no_grad():
                hard = pred_masks[item, src] > 0  # (M, T, Hm, Wm)
                gt = resample_to_grid(target.masks[tgt], (hard.shape[-2], hard.shape[-1])) > 0.5
                inter = (hard & gt).flatten(1).sum(1)
                union = (hard | gt).flatten(1).sum(1)
                targets.append(torch.where(union > 0, inter / union.clamp(min=1), 1.0))
            logits.append(pred_quality[item, src])
        if not logits:
            return pred_quality.float().sum() * 0.0
        loss = F.binary_cross_entropy_with_logits(
            torch.cat(logits).float(), torch.cat(targets).float(), reduction="sum"
        )
        return loss / num_masks

    def embedding_loss(self, pixel_embed: Tensor, videos: list[VideoTargets]) -> Tensor:
        """Discriminative loss of both embedding maps: pixel_embed (2, B, T, E, Hm, Wm)."""
        grid = (pixel_embed.shape[-2], pixel_embed.shape[-1])
        parts = []
        for b, video in enumerate(videos):
            masks = resample_to_grid(video.masks, grid)  # (n, T, Hm, Wm), empty where absent
            for level in range(pixel_embed.shape[0]):
                embed = pixel_embed[level, b]  # (T, E, Hm, Wm)
                parts.append(self.embed_parts(embed.flatten(2), masks.flatten(2)))
        return discriminative_loss(parts)

    def similarity_loss(
        self,
        outputs: AVISMOutput,
        videos: list[VideoTargets],
        frame_matches: list[list[Match]],
        video_matches: list[Match],
    ) -> Tensor:
        """VITA's foreground similarity loss over (frame-query layer, clip) groups."""
        if outputs.video.pred_fq_embed is None or outputs.video.pred_cq_embed is None:
            raise ValueError("the similarity loss needs a model built with use_sim and sim_use_clip")
        fq_embed = outputs.video.pred_fq_embed  # (Lf, B, T, fQ, C)
        cq_embed = outputs.video.pred_cq_embed[-1]  # (Lf, B, cQ, C)
        num_layers, num_clips, num_frames = fq_embed.shape[:3]
        device = fq_embed.device
        embed_parts, id_parts = [], []
        for layer in range(num_layers):
            for b, video in enumerate(videos):
                group = layer * num_clips + b
                for t in range(num_frames):
                    src, tgt = frame_matches[layer][b * num_frames + t]
                    embed_parts.append(fq_embed[layer, b, t, src.to(device)])
                    id_parts.append(video.frame_ids(t)[tgt.to(device)])
                src, tgt = video_matches[group]
                embed_parts.append(cq_embed[layer, b, src.to(device)])
                id_parts.append(video.ids[tgt.to(device)])
        groups = group_labels(id_parts, num_frames + 1, device)  # T frame entries + 1 video entry
        embeds, ids = torch.cat(embed_parts).float(), torch.cat(id_parts)
        if ids.numel() == 0:
            return (fq_embed.float().sum() + cq_embed.float().sum()) * 0.0
        logits = embeds @ embeds.T
        same_group = groups[:, None] == groups[None, :]
        same_track = (ids[:, None] == ids[None, :]) & same_group
        loss = F.binary_cross_entropy_with_logits(logits, same_track.float(), reduction="none")
        return (loss * same_group).sum() / same_group.sum().clamp(min=1)


def same_class_others(target: MatchTarget, num_classes: int) -> Tensor:
    """Per target, the union of the masks of the other targets of its class.

    target.labels (n,), target.masks (n, T, Ht, Wt) -> (n, T, Ht, Wt) float in [0, 1]. Labels
    >= num_classes (the official quirk's no-object targets) have no class and no twins.
    """
    labels = target.labels
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] < num_classes)
    same.fill_diagonal_(False)  # (n, n)
    masks = target.masks.float()
    if masks.shape[0] == 0:
        return masks
    others = same.float() @ masks.flatten(1)  # (n, T*Ht*Wt)
    return others.clamp(max=1.0).reshape(masks.shape)


def group_labels(entries: list[Tensor], entries_per_group: int, device: torch.device) -> Tensor:
    """The group index of every element of the concatenated entries: entry e is in group e // k."""
    labels = [
        torch.full((len(entry),), index // entries_per_group, dtype=torch.int64, device=device)
        for index, entry in enumerate(entries)
    ]
    return torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64, device=device)
