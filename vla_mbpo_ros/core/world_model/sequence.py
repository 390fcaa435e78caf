"""Token sequences of the UMM world model, including interleaved view decoding (IVD).

A sequence is a list of segments: text, an image through the understanding encoder (``und``), an image
as VQ codebook tokens fed back through the generation embeddings (``vq``), and at most one ``target``
image whose VQ tokens the model generates (teacher-forced in training). Building the segment list is
kept apart from the model so tests can check which images a target is conditioned on.

Dynamics with IVD (method notes section 2.2), one sequence per generated view:
  head:   [views_t (und + vq), action text] -> head_{t+k}
  wrist:  [wrist_t (und + vq), head_{t+k} (vq)] -> wrist_{t+k}
In training ``head_{t+k}`` is the clean target; at inference it is the head just generated, so training
and inference see the same layout. Each stage is its own sequence, so the wrist target sees only its own
wrist view and the head target (no action text, no other views), and the head target never sees a wrist
target. Without IVD every view is generated from the same inputs as the head (the ablation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

CURRENT = "t"
NEXT = "t+k"


@dataclass(frozen=True)
class ImageRef:
    """One image of a sample: a view at the current time ``t`` or ``k`` steps later."""

    view: str
    time: str  # CURRENT or NEXT


@dataclass(frozen=True)
class Segment:
    kind: str  # "text" | "und" | "vq" | "target"
    text: str = ""
    image: ImageRef | None = None


@dataclass
class PromptTemplates:
    """Every piece of text the world model reads. A real checkpoint can wrap these in its chat format."""

    system: str = "You are a world model for robot manipulation."
    view_label: str = "{view} view:"
    dynamics: str = "Actions: {actions}. Predict the {view} view after these actions."
    predicted_label: str = "Predicted {view} view:"
    wrist: str = "Predict the next {view} view from its current view and the predicted {head} view."
    reward: str = "Is the task '{instruction}' completed? Answer:"
    outcome: str = "Actions: {actions}. Will the task '{instruction}' be completed after these actions? Answer:"
    yes: str = "Yes"
    no: str = "No"


@dataclass
class SequenceSpec:
    """Segments of one sequence; ``target`` is the image it generates (None for a reward question)."""

    segments: list[Segment]
    target: ImageRef | None = None

    def inputs(self) -> list[ImageRef]:
        """Images the target is conditioned on, in sequence order."""
        return [s.image for s in self.segments if s.kind in ("und", "vq") and s.image is not None]

    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.kind == "text")


def _view_inputs(prompts: PromptTemplates, view: str, vq_context: bool) -> list[Segment]:
    ref = ImageRef(view, CURRENT)
    segments = [Segment("text", prompts.view_label.format(view=view)), Segment("und", image=ref)]
    if vq_context:
        segments.append(Segment("vq", image=ref))
    return segments


def context_stage(
    prompts: PromptTemplates, view_names: Sequence[str], action_text: str, target_view: str, vq_context: bool
) -> SequenceSpec:
    """All current views + action text -> ``target_view`` at t+k (the head stage, or any view without IVD)."""
    segments = [Segment("text", prompts.system)] if prompts.system else []
    for view in view_names:
        segments += _view_inputs(prompts, view, vq_context)
    segments.append(Segment("text", prompts.dynamics.format(actions=action_text, view=target_view)))
    target = ImageRef(target_view, NEXT)
    segments.append(Segment("target", image=target))
    return SequenceSpec(segments, target)


def wrist_stage(prompts: PromptTemplates, head: str, wrist: str, vq_context: bool) -> SequenceSpec:
    """IVD second stage: own current wrist view + the (generated) head at t+k -> wrist at t+k."""
    segments = [Segment("text", prompts.system)] if prompts.system else []
    segments += _view_inputs(prompts, wrist, vq_context)
    segments += [
        Segment("text", prompts.predicted_label.format(view=head)),
        Segment("vq", image=ImageRef(head, NEXT)),
        Segment("text", prompts.wrist.format(view=wrist, head=head)),
    ]
    target = ImageRef(wrist, NEXT)
    segments.append(Segment("target", image=target))
    return SequenceSpec(segments, target)


def dynamics_stages(
    prompts: PromptTemplates, view_names: Sequence[str], action_text: str, ivd: bool, vq_context: bool
) -> list[list[SequenceSpec]]:
    """Generation stages in order; the sequences of one stage can run as one batch.

    With IVD: [[head], [wrist_1, ..., wrist_N]]; the second stage needs the first stage's output.
    Without IVD: one stage with a sequence per view, all from the same inputs.
    """
    if not view_names:
        raise ValueError("view_names must name at least the head view")
    head, wrists = view_names[0], view_names[1:]
    if not ivd:
        return [[context_stage(prompts, view_names, action_text, v, vq_context) for v in view_names]]
    stages = [[context_stage(prompts, view_names, action_text, head, vq_context)]]
    if wrists:
        stages.append([wrist_stage(prompts, head, w, vq_context) for w in wrists])
    return stages


def reward_question(prompts: PromptTemplates, head: str, instruction: str) -> SequenceSpec:
    """Head view + "is the task done?"; the model answers with the yes/no token next."""
    segments = [Segment("text", prompts.system)] if prompts.system else []
    segments += [
        Segment("text", prompts.view_label.format(view=head)),
        Segment("und", image=ImageRef(head, CURRENT)),
        Segment("text", prompts.reward.format(instruction=instruction)),
    ]
    return SequenceSpec(segments, None)


def outcome_question(
    prompts: PromptTemplates, view_names: Sequence[str], action_text: str, instruction: str, vq_context: bool
) -> SequenceSpec:
    """Current views + action text + "will the task be done after these actions?" (``reward_from:
    transition``): the reward of a transition read from its inputs, as the head stage sees them, not from
    the frame the model generates."""
    segments = [Segment("text", prompts.system)] if prompts.system else []
    for view in view_names:
        segments += _view_inputs(prompts, view, vq_context)
    segments.append(Segment("text", prompts.outcome.format(actions=action_text, instruction=instruction)))
    return SequenceSpec(segments, None)


# ---------------------------------------------------------------------------------------------------
# Rendering to token positions


@dataclass
class Piece:
    """A run of positions in a rendered sequence: text ids, or ``length`` image positions."""

    kind: str  # "text" | "und" | "vq" | "target"
    length: int
    ids: list[int] = field(default_factory=list)
    image: ImageRef | None = None


@dataclass
class RenderedSequence:
    spec: SequenceSpec
    pieces: list[Piece]

    @property
    def length(self) -> int:
        return sum(p.length for p in self.pieces)

    def span(self, kind: str, image: ImageRef) -> tuple[int, int]:
        """(start, length) of the first piece of ``kind`` showing ``image``."""
        start = 0
        for piece in self.pieces:
            if piece.kind == kind and piece.image == image:
                return start, piece.length
            start += piece.length
        raise KeyError(f"no {kind} piece for {image}")


@dataclass
class TokenIds:
    """Ids of the special tokens that frame images."""

    boi: int
    eoi: int


def render(
    spec: SequenceSpec,
    tokenize: Callable[[str], list[int]],
    special: TokenIds,
    n_und: int,
    n_vq: int,
    include_target: bool,
    suffix_ids: Sequence[int] = (),
) -> RenderedSequence:
    """Lay out a spec as positions. Images are framed by begin/end-of-image tokens.

    ``include_target=False`` ends the sequence with the target's begin-of-image token, ready for
    generation; with True the target tokens follow (teacher forcing). ``suffix_ids`` are appended
    (the answer token of a reward question during training).
    """
    pieces: list[Piece] = []
    for segment in spec.segments:
        if segment.kind == "text":
            ids = tokenize(segment.text)
            pieces.append(Piece("text", len(ids), ids=ids))
        elif segment.kind in ("und", "vq"):
            pieces.append(Piece("text", 1, ids=[special.boi]))
            pieces.append(Piece(segment.kind, n_und if segment.kind == "und" else n_vq, image=segment.image))
            pieces.append(Piece("text", 1, ids=[special.eoi]))
        elif segment.kind == "target":
            pieces.append(Piece("text", 1, ids=[special.boi]))
            if include_target:
                pieces.append(Piece("target", n_vq, image=segment.image))
        else:
            raise ValueError(f"unknown segment kind {segment.kind!r}")
    if suffix_ids:
        pieces.append(Piece("text", len(suffix_ids), ids=list(suffix_ids)))
    return RenderedSequence(spec, pieces)
