"""UMM world model core: action codec, IVD sequences, batched generation, training, persistence, data."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vla_mbpo_ros.core.data.episode import Episode
from vla_mbpo_ros.core.data.reader import load_episodes
from vla_mbpo_ros.core.world_model.codec import ActionCodec, ActionStats
from vla_mbpo_ros.core.world_model.configuration import TinyArchConfig, WorldModelConfig
from vla_mbpo_ros.core.world_model.data import (
    DataConfig,
    action_stats,
    build_samples,
    labelled_transitions,
    reward_labels,
)
from vla_mbpo_ros.core.world_model.evaluate import EvalConfig, evaluate_dynamics, evaluate_reward, psnr, side_by_side, ssim
from vla_mbpo_ros.core.world_model.sequence import CURRENT, NEXT, ImageRef, PromptTemplates, dynamics_stages
from vla_mbpo_ros.core.world_model.train import TrainConfig, read_sections, train_world_model
from vla_mbpo_ros.core.world_model.umm import UMMWorldModel

torch.set_num_threads(1)

SIZE = 16
VIEWS = ("head", "wrist")
INSTRUCTION = "move the block"
ARCH = TinyArchConfig(
    image_size=SIZE, tokens_per_side=4, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
    codebook_size=64, tokenizer_vocab_size=400,
)


def make_episode(rng: np.random.Generator, length: int = 20, success: bool = False) -> Episode:
    """A red block moved by velocity actions on a dark head view; the wrist view's brightness follows
    the block's x. Successful episodes light a green bar in the head view for their last 5 frames."""
    pos = rng.uniform(3, SIZE - 4, 2)
    head, wrist, actions = [], [], []
    for t in range(length):
        action = rng.uniform(-0.6, 0.6, 2).astype(np.float32)
        frame = np.full((SIZE, SIZE, 3), 30, np.uint8)
        x, y = np.clip(pos.astype(int), 0, SIZE - 3)
        frame[y : y + 3, x : x + 3] = (220, 50, 50)
        if success and t >= length - 5:
            frame[:2] = (40, 230, 40)
        head.append(frame)
        wrist.append(np.full((SIZE, SIZE, 3), int(pos[0] * 14), np.uint8))
        actions.append(action)
        pos = np.clip(pos + action, 0, SIZE - 3)
    return Episode(views={"head": np.stack(head), "wrist": np.stack(wrist)}, states=np.zeros((length, 0)),
                   actions=np.stack(actions), instruction=INSTRUCTION, success=success)


def make_episodes(n: int, seed: int) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [make_episode(rng, success=i % 2 == 0) for i in range(n)]


def tiny_model(config: WorldModelConfig | None = None, seed: int = 0, views=VIEWS) -> UMMWorldModel:
    stats = ActionStats(low=-np.full(2, 0.6), high=np.full(2, 0.6))
    return UMMWorldModel.tiny(views, stats, SIZE, seed, arch=ARCH, config=config, instructions=[INSTRUCTION])


DATA = DataConfig(chunk_size=2, reward_yes_window=5, reward_no_margin=8, yes_oversample=4)


# -- codec -----------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    low=arrays(np.float64, 4, elements=st.floats(-5, 5)),
    span=arrays(np.float64, 4, elements=st.floats(0, 10)),
    unit=arrays(np.float64, (3, 4), elements=st.floats(-0.5, 1.5)),
)
def test_codec_round_trip_within_one_bin(low, span, unit):
    stats = ActionStats(low=low, high=low + span)
    codec = ActionCodec(stats, n_bins=256)
    chunk = (stats.low + unit * (stats.high - stats.low)).astype(np.float32)
    bins = codec.encode(chunk)
    assert bins.min() >= 0 and bins.max() <= 256
    text = codec.to_text(chunk)
    assert text.startswith("Step 0: [") and "Step 2: [" in text
    np.testing.assert_array_equal(codec.parse_bins(text), bins)
    clipped = np.clip(chunk, stats.low, stats.high)
    error = np.abs(codec.from_text(text) - clipped)
    assert np.all(error <= codec.bin_width + 1e-4 * (1 + np.abs(clipped)))


def test_codec_clips_and_rejects_bad_input(tmp_path):
    codec = ActionCodec(ActionStats(low=[-1.0, 0.0], high=[1.0, 2.0]), n_bins=256)
    np.testing.assert_array_equal(codec.encode(np.array([[-9.0, 9.0]])), [[0, 256]])
    assert codec.format_bins(np.array([[0, 256], [128, 1]])) == "Step 0: [0, 256]; Step 1: [128, 1]"
    with pytest.raises(ValueError):
        codec.parse_bins("Step 1: [1, 2]")
    with pytest.raises(ValueError):
        codec.encode(np.zeros((2, 3)))
    codec.stats.save(tmp_path)
    np.testing.assert_array_equal(ActionStats.load(tmp_path).high, [1.0, 2.0])
    stats = ActionStats.from_actions(np.array([[0.0], [1.0], [2.0], [100.0]]), quantiles=(0.0, 0.5))
    assert stats.high[0] == pytest.approx(1.5)


# -- IVD: sequence construction and what each target attends to --------------------------------------------------


def test_ivd_sequences_condition_wrists_on_generated_head_only():
    prompts = PromptTemplates()
    stages = dynamics_stages(prompts, ("head", "left", "right"), "Step 0: [1, 2]", ivd=True, vq_context=True)
    assert [[s.target for s in stage] for stage in stages] == [
        [ImageRef("head", NEXT)],
        [ImageRef("left", NEXT), ImageRef("right", NEXT)],
    ]
    head = stages[0][0]
    assert {r.time for r in head.inputs()} == {CURRENT}  # no future view, in particular no wrist target
    assert {r.view for r in head.inputs()} == {"head", "left", "right"}
    assert "Step 0: [1, 2]" in head.text()
    for wrist in stages[1]:
        inputs = wrist.inputs()
        assert set(inputs) == {ImageRef(wrist.target.view, CURRENT), ImageRef("head", NEXT)}
        kinds = [s.kind for s in wrist.segments]
        assert kinds.index("target") > max(i for i, s in enumerate(wrist.segments) if s.image == ImageRef("head", NEXT))
        assert "Step 0" not in wrist.text()  # the wrist sees the action only through the generated head
    joint = dynamics_stages(prompts, ("head", "left"), "Step 0: [1, 2]", ivd=False, vq_context=True)
    assert len(joint) == 1 and all({r.time for r in s.inputs()} == {CURRENT} for s in joint[0])


@pytest.mark.parametrize("ivd", [True, False])
def test_ivd_dependence_in_the_model(ivd):
    """Change the head target's tokens: with IVD the wrist target's logits move, the head's never depend
    on the wrist target; without IVD the wrist ignores the head target."""
    model = tiny_model(WorldModelConfig(view_names=VIEWS, ivd=ivd))
    rng = np.random.default_rng(0)
    images = {v: torch.from_numpy(rng.integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)) for v in VIEWS}
    texts = [model.codec.to_text(rng.uniform(-0.6, 0.6, (2, 2))) for _ in range(2)]
    n = model.core.n_vq

    def logits(head_ids, wrist_ids):
        known = {ImageRef("head", NEXT): head_ids, ImageRef("wrist", NEXT): wrist_ids}
        with torch.no_grad():
            rows, out, _ = model.core.target_logits(images, images, texts, known)
        return {(b, r.spec.target.view): out[i] for i, (b, r) in enumerate(rows)}

    zeros, ones = torch.zeros(2, n, dtype=torch.long), torch.ones(2, n, dtype=torch.long)
    base = logits(zeros, zeros)
    head_changed = logits(ones, zeros)
    wrist_changed = logits(zeros, ones)
    for b in range(2):
        torch.testing.assert_close(wrist_changed[(b, "head")], base[(b, "head")], rtol=0, atol=0)
        wrist_moved = not torch.allclose(head_changed[(b, "wrist")], base[(b, "wrist")])
        assert wrist_moved == ivd
        # Teacher forcing: a target's first token never sees the target itself.
        torch.testing.assert_close(head_changed[(b, "head")][0], base[(b, "head")][0])


def test_generation_uses_generated_head_for_wrists_and_matches_training_layout():
    """Greedy generation == argmax of the teacher-forced logits given the generated tokens: the wrist stage
    at inference reads exactly the head tokens generated first, in the layout used for training."""
    model = tiny_model()
    rng = np.random.default_rng(1)
    images = {v: torch.from_numpy(rng.integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)) for v in VIEWS}
    texts = [model.codec.to_text(rng.uniform(-0.6, 0.6, (2, 2))) for _ in range(3)]
    tokens, stages = model.core.predict_tokens(images, texts)
    assert [r.spec.target.view for _, r in stages[0]] == ["head"] * 3
    assert [r.spec.target.view for _, r in stages[1]] == ["wrist"] * 3
    known = {ImageRef(v, NEXT): ids for v, ids in tokens.items()}
    with torch.no_grad():
        rows, logits, _ = model.core.target_logits(images, images, texts, known)
    for i, (b, rendered) in enumerate(rows):
        torch.testing.assert_close(logits[i].argmax(-1), tokens[rendered.spec.target.view][b], rtol=0, atol=0)


# -- inference API -----------------------------------------------------------------------------------------------


def test_step_contract_and_batched_equals_sequential():
    model = tiny_model()
    rng = np.random.default_rng(2)
    views = {
        "head": rng.integers(0, 255, (3, 12, 20, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8),
    }
    chunks = rng.uniform(-1, 1, (3, 2, 2)).astype(np.float32)
    instructions = [INSTRUCTION, "open the drawer please", "x"]
    batched, reward, states = model.step(views, chunks, instructions)
    np.testing.assert_array_equal(states, chunks[:, -1])  # the arm is where its last targets sent it
    assert batched["head"].shape == (3, 12, 20, 3) and batched["wrist"].shape == (3, SIZE, SIZE, 3)
    assert batched["head"].dtype == np.uint8 and reward.dtype == np.float32 and reward.shape == (3,)
    assert set(np.unique(reward)) <= {0.0, 1.0}
    for b in range(3):
        single, single_reward, _ = model.step({v: x[b : b + 1] for v, x in views.items()}, chunks[b : b + 1], instructions[b : b + 1])
        for v in VIEWS:
            np.testing.assert_array_equal(single[v][0], batched[v][b])
        assert single_reward[0] == reward[b]
    with pytest.raises(ValueError, match="wrist"):
        model.step({"head": views["head"]}, chunks, instructions)
    model.core.config.state_from_actions = False  # views and reward only: the joint state is left as it was
    assert len(model.step(views, chunks, instructions)) == 2


def test_a_step_from_generated_views_reuses_their_tokens_instead_of_encoding_them():
    model = tiny_model()
    rng = np.random.default_rng(4)
    views = {v: rng.integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8) for v in VIEWS}
    chunks = rng.uniform(-1, 1, (2, 2, 2)).astype(np.float32)
    first, _, _ = model.step(views, chunks, [INSTRUCTION] * 2)
    encoded = []
    encode = model.core.vq_encode
    model.core.vq_encode = lambda images: encoded.append(len(images)) or encode(images)
    model.step(first, chunks, [INSTRUCTION] * 2)
    assert encoded == []  # both views were generated by the first step
    model.step({"head": first["head"], "wrist": views["wrist"]}, chunks, [INSTRUCTION] * 2)
    assert encoded == [2]  # the real wrist views are encoded, the generated head views are not
    model.forget_generated()
    model.step(first, chunks, [INSTRUCTION] * 2)
    assert encoded == [2, 4]


def test_the_copy_prior_makes_the_untrained_model_predict_the_current_tokens():
    import torch

    rng = np.random.default_rng(6)
    views = {v: rng.integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8) for v in VIEWS}
    model = tiny_model(WorldModelConfig(view_names=VIEWS, copy_prior=1000.0))
    current = {v: model.core.vq_encode(model.core.to_model_size(torch.from_numpy(x))) for v, x in views.items()}
    tokens, _ = model.core.predict_tokens({v: torch.from_numpy(x) for v, x in views.items()}, ["Step 0: [1 2]"] * 2)
    for v in VIEWS:  # the bonus outweighs any logit of a random head: every token is copied
        assert torch.equal(tokens[v], current[v])
    plain = tiny_model(WorldModelConfig(view_names=VIEWS))
    plain_tokens, _ = plain.core.predict_tokens({v: torch.from_numpy(x) for v, x in views.items()}, ["Step 0: [1 2]"] * 2)
    assert not torch.equal(plain_tokens["head"], current["head"])  # without it a random model does not copy
    with pytest.raises(ValueError, match="vq_context"):
        WorldModelConfig(view_names=VIEWS, copy_prior=1.0, vq_context=False)


def test_sampling_is_seeded_and_stays_in_top_k():
    config = WorldModelConfig(view_names=VIEWS, temperature=1.0, top_k=3)
    rng = np.random.default_rng(5)
    images = {v: torch.from_numpy(rng.integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)) for v in VIEWS}
    texts = [tiny_model().codec.to_text(rng.uniform(-0.6, 0.6, (2, 2))) for _ in range(2)]
    runs = []
    for _ in range(2):
        model = tiny_model(config, seed=7)
        runs.append(model.core.predict_tokens(images, texts, torch.Generator().manual_seed(11))[0])
    for v in VIEWS:
        torch.testing.assert_close(runs[0][v], runs[1][v], rtol=0, atol=0)
    known = {ImageRef(v, NEXT): ids for v, ids in runs[0].items()}
    with torch.no_grad():
        rows, logits, _ = model.core.target_logits(images, images, texts, known)
    greedy = torch.stack([logits[i].argmax(-1) for i in range(len(rows))])
    sampled = torch.stack([runs[0][r.spec.target.view][b] for b, r in rows])
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == sampled[..., None]).any(-1).all()
    assert (greedy != sampled).any()


def test_save_then_from_pretrained_gives_identical_outputs(tmp_path):
    config = WorldModelConfig(view_names=VIEWS, ivd=False, temperature=0.0)
    model = tiny_model(config, seed=3)
    rng = np.random.default_rng(3)
    views = {v: rng.integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8) for v in VIEWS}
    chunks = rng.uniform(-0.6, 0.6, (2, 2, 2)).astype(np.float32)
    before = model.step(views, chunks, [INSTRUCTION] * 2)
    model.save_pretrained(tmp_path)
    loaded = UMMWorldModel.from_pretrained(tmp_path)
    assert loaded.config == config
    np.testing.assert_array_equal(loaded.codec.stats.low, model.codec.stats.low)
    for name, tensor in model.core.janus.state_dict().items():
        torch.testing.assert_close(loaded.core.janus.state_dict()[name], tensor, rtol=0, atol=0)
    after = loaded.step(views, chunks, [INSTRUCTION] * 2)
    for v in VIEWS:
        np.testing.assert_array_equal(after[0][v], before[0][v])
    np.testing.assert_array_equal(after[1], before[1])
    # A plain Janus checkpoint (weights, tokenizer, image processor only) loads given views and stats.
    plain = tmp_path / "plain"
    model.core.janus.save_pretrained(plain)
    model.core.tokenizer.save_pretrained(plain)
    model.core.image_processor.save_pretrained(plain)
    with pytest.raises(ValueError, match="view_names"):
        UMMWorldModel.from_pretrained(plain)
    raw = UMMWorldModel.from_pretrained(
        plain, view_names=VIEWS, action_stats=model.codec.stats, config_overrides={"ivd": False}
    )
    np.testing.assert_array_equal(raw.step(views, chunks, [INSTRUCTION] * 2)[0]["wrist"], before[0]["wrist"])


# -- training -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    episodes = make_episodes(8, seed=10)
    dynamics, reward = build_samples(episodes, VIEWS, DATA)
    model = UMMWorldModel.tiny(VIEWS, action_stats(episodes), SIZE, 0, arch=ARCH, instructions=[INSTRUCTION])
    config = TrainConfig(steps=240, batch_size=8, reward_batch_size=8, lr=2e-3, warmup_steps=10, log_every=20)
    history = train_world_model(model, dynamics, reward, config, progress=False)
    return model, history


def test_training_lowers_image_and_answer_losses(trained):
    _, history = trained
    assert len(history.image_loss) == len(history.answer_loss) == 240
    first_image, last_image = np.mean(history.image_loss[:20]), np.mean(history.image_loss[-20:])
    first_answer, last_answer = np.mean(history.answer_loss[:20]), np.mean(history.answer_loss[-20:])
    assert last_image < 0.6 * first_image
    assert last_answer < 0.5 * first_answer


def test_reward_learns_separable_labelling_and_evaluation_runs(trained, tmp_path):
    model, _ = trained
    held_out = make_episodes(4, seed=99)
    dynamics, reward = build_samples(held_out, VIEWS, DATA)
    assert reward.labels.any() and not reward.labels.all()
    scores = evaluate_reward(model, reward, EvalConfig(batch_size=16))
    assert scores["accuracy"] >= 0.9 and scores["recall"] >= 0.9
    metrics = evaluate_dynamics(model, dynamics, EvalConfig(batch_size=16, max_samples=8))
    assert np.isfinite(metrics["head"]["psnr"]) and -1 <= metrics["wrist"]["ssim"] <= 1
    assert metrics["seconds_per_branch"] > 0


def test_unseen_frames_score_the_reward_then_recalibrate_its_threshold(trained):
    from vla_mbpo_ros.core.world_model.evaluate import classification_scores, score_unseen_reward, success_probabilities

    model, _ = trained
    _, reward = build_samples(make_episodes(4, seed=98), VIEWS, DATA)
    probability, truth = success_probabilities(model, reward, EvalConfig(max_samples=10**6))
    kept = model.config.reward_threshold
    try:
        model.config.reward_threshold = float(np.median(probability[truth]))  # too high: half the Yes frames missed
        too_high = classification_scores(probability > model.config.reward_threshold, truth)
        assert too_high["recall"] <= 0.5
        scores = score_unseen_reward(model, reward)  # scored at the threshold as it is; left there
        assert scores["recall"] == too_high["recall"] and "recalibrated_threshold" not in scores
        assert 0.9 <= scores["auroc"] <= 1.0
        scores = score_unseen_reward(model, reward, recalibrate_to=0.95)
        assert scores["recall"] == too_high["recall"]  # the scores are those before recalibrating
        moved = classification_scores(probability > model.config.reward_threshold, truth)
        assert scores["recalibrated_threshold"] == model.config.reward_threshold
        assert moved["precision"] >= 0.95 and moved["recall"] > scores["recall"]
        # Frames of one class only: nothing to calibrate on, the threshold stays.
        _, failures = build_samples([e for e in make_episodes(4, seed=98) if not e.success], VIEWS, DATA)
        before = model.config.reward_threshold
        score_unseen_reward(model, failures, recalibrate_to=0.95)
        assert model.config.reward_threshold == before
    finally:
        model.config.reward_threshold = kept


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="chunk_size"):
        DataConfig(chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        WorldModelConfig(temperature=-1)
    with pytest.raises(ValueError, match="tokens_per_side"):
        TinyArchConfig(image_size=30, tokens_per_side=8)
    sections = read_sections("config/world_model.yaml")
    assert sections["train"]["answer_loss_weight"] == 0.01 and sections["data"]["reward_yes_window"] == 5


# -- metrics and data ------------------------------------------------------------------------------------------------


def test_metrics_and_side_by_side(tmp_path):
    rng = np.random.default_rng(4)
    real = rng.integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    noisy = np.clip(real.astype(int) + rng.integers(-20, 20, real.shape), 0, 255).astype(np.uint8)
    assert psnr(real, real)[0] == 100.0 and psnr(noisy, real)[0] < 40
    assert ssim(real, real)[0] == pytest.approx(1.0) and ssim(noisy, real)[0] < 0.99
    path = side_by_side({"head": real, "wrist": real}, {"head": noisy, "wrist": noisy}, tmp_path / "x.png",
                        current={"head": real, "wrist": real}, rewards=np.array([0.0, 1.0]))
    from PIL import Image

    width, height = Image.open(path).size
    assert width > height > 0  # 2 rows x 6 labelled columns (now, real, imagined per view)


def test_reward_threshold_calibration_puts_precision_first():
    from vla_mbpo_ros.core.world_model.evaluate import calibrate_threshold, classification_scores

    probability = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    truth = np.array([False, False, False, True, True])
    assert calibrate_threshold(probability, truth, min_precision=0.95) == pytest.approx(0.6)  # keeps 0.7, 0.9
    mixed = np.array([False, False, True, False, True])  # a "No" (0.7) above a "Yes" (0.6)
    assert calibrate_threshold(probability, mixed, min_precision=0.95) == pytest.approx(0.7)  # recall 1/2
    # Precision 2/3 is enough here: recall 1 from 0.2 to 0.5, and of equal recalls the highest threshold.
    assert calibrate_threshold(probability, mixed, min_precision=0.6) == pytest.approx(0.5)
    assert calibrate_threshold(probability, np.zeros(5, bool), fallback=0.4) == 0.4  # no positives: no calibration
    # A "No" on top (0.9): precision 0.95 is out of reach; the most precise threshold keeps both Yes frames.
    top_no = np.array([False, False, True, True, False])
    assert calibrate_threshold(probability, top_no, min_precision=0.95, fallback=0.4) == 0.4
    assert calibrate_threshold(probability, top_no, min_precision=0.95, or_most_precise=True) == pytest.approx(0.5)
    assert calibrate_threshold(probability, np.zeros(5, bool), fallback=0.4, or_most_precise=True) == 0.4
    scores = classification_scores(probability > 0.5, truth)
    assert (scores["precision"], scores["recall"], scores["accuracy"]) == pytest.approx((2 / 3, 1.0, 0.8))


def test_success_agreement_counts_imagined_successes_the_sim_did_not_confirm():
    from vla_mbpo_ros.core.rl.rollout import success_agreement

    imagined = np.array([[1, 0], [0, 1], [0, 0], [1, 0]], np.float32)
    replayed = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], np.float32)
    agreement = success_agreement(imagined, replayed)
    assert agreement["false_success_rate"] == pytest.approx(2 / 3)  # branches 1 and 3 of 0, 1, 3
    assert agreement["missed_success_rate"] == pytest.approx(1 / 2)  # branch 2 of 0, 2
    assert (agreement["imagined_success"], agreement["true_success"]) == pytest.approx((0.75, 0.5))
    assert agreement["agreement"] == pytest.approx(1 / 4)  # of branches 0-3 (a success in either), only 0 in both
    assert success_agreement(np.zeros((3, 2)), replayed[:3])["agreement"] == 0.0  # never imagined: no agreement
    assert np.isnan(success_agreement(np.zeros((2, 2)), np.zeros((2, 2)))["agreement"])


def test_reward_labels_windows():
    labels = dict(reward_labels(20, success=True, yes_window=5, no_margin=10))
    assert [t for t, yes in labels.items() if yes] == [15, 16, 17, 18, 19]
    assert [t for t, yes in labels.items() if not yes] == [0, 1, 2, 3, 4]  # more than 10 before frame 15
    assert reward_labels(20, success=False, yes_window=5, no_margin=10) == [(t, False) for t in range(10)]
    # margin 0 (exact labels, e.g. a corpus that records the success frames): every frame is labelled
    assert [yes for _, yes in reward_labels(8, success=True, yes_window=3, no_margin=0)] == [False] * 5 + [True] * 3


def test_labelled_transitions_keep_every_yes_target_and_one_no_target_per_chunk():
    episode = Episode(views={}, states=np.zeros((20, 0)), actions=np.zeros((20, 2)), instruction="", success=True)
    data = DataConfig(chunk_size=4, reward_yes_window=5, reward_no_margin=3)
    transitions = labelled_transitions([episode], data)
    # targets t + 4: Yes for frames 15-19, No for frames up to 11 (3 before the first Yes), every 4th start
    assert [(t, yes) for _, t, yes in transitions] == [(0, False), (4, False), (11, True), (12, True), (13, True),
                                                       (14, True), (15, True)]


def test_the_reward_also_trains_on_the_models_own_generated_frames_with_the_real_labels(trained):
    model, _ = trained
    # views at twice the model's size (the bench renders 96 px for a 32 px model): both kinds batch together
    episodes = [dataclasses.replace(e, views={v: f.repeat(2, axis=1).repeat(2, axis=2) for v, f in e.views.items()})
                for e in make_episodes(4, seed=5)]
    data = dataclasses.replace(DATA, generated_reward=True)
    generated = model.generated_reward_samples(episodes, data)
    transitions = labelled_transitions(episodes, data)
    assert len(generated.images) == len(transitions) and generated.labels.any() and not generated.labels.all()
    assert generated.images.dtype == np.uint8 and generated.images.shape[-1] == 3
    # the frames are the model's prediction from the real views and chunk, not the recorded target frame
    e, t, _ = transitions[0]
    predicted = model.predict_model_size({v: episodes[e].views[v][t:t + 1] for v in VIEWS},
                                         episodes[e].actions[None, t:t + DATA.chunk_size])["head"][0].numpy()
    assert predicted.shape == (SIZE, SIZE, 3) and generated.images[0].shape == (2 * SIZE, 2 * SIZE, 3)
    _, reward = model.training_samples(episodes, data)
    batch = next(iter(torch.utils.data.DataLoader(reward, batch_size=len(reward))))
    assert batch["image"].shape == (len(reward), 2 * SIZE, 2 * SIZE, 3)
    probability = model.success_probability(generated.images[:2], [INSTRUCTION] * 2)  # as the reward judges them
    assert probability.shape == (2,) and np.all((probability >= 0) & (probability <= 1))
    assert len(reward) == len(build_samples(episodes, VIEWS, DATA)[1]) + len(generated)
    item = reward[len(reward) - 1]
    assert item["image"].dtype == torch.uint8 and item["instruction"] == INSTRUCTION
    assert len(model.training_samples(episodes, DATA)[1]) == len(build_samples(episodes, VIEWS, DATA)[1])


def action_outcome_episodes(n: int, seed: int) -> list[Episode]:
    """Episodes whose frames are all alike: a success is told only by its last actions (+0.6 on every joint
    from frame 12), so a reward can learn it from the transition but not from any frame."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        actions = rng.uniform(-0.6, 0.0, (20, 2)).astype(np.float32)
        success = i % 2 == 0
        if success:
            actions[12:] = 0.6
        frames = np.full((20, SIZE, SIZE, 3), 60, np.uint8)
        episodes.append(Episode(views={v: frames.copy() for v in VIEWS}, states=np.zeros((20, 0)), actions=actions,
                                instruction=INSTRUCTION, success=success))
    return episodes


def test_the_transition_reward_answers_from_the_views_and_the_chunk():
    from vla_mbpo_ros.core.world_model.data import TransitionRewardSamples
    from vla_mbpo_ros.core.world_model.evaluate import score_unseen_reward

    episodes = action_outcome_episodes(8, seed=3)
    model = tiny_model(WorldModelConfig(view_names=VIEWS, reward_from="transition"))
    dynamics, reward = model.training_samples(episodes, DATA)
    assert isinstance(reward, TransitionRewardSamples)
    # every transition whose target frame has a label: Yes targets 15-19 (starts 13-17); No targets 0-6 of a
    # success, 0-11 of a failure (starts 0-9)
    assert sorted({(t, yes) for _, t, yes in reward.index}) == [(t, False) for t in range(10)] + \
        [(t, True) for t in range(13, 18)]
    item = reward[0]
    assert set(item["current"]) == set(VIEWS) and item["actions"].shape == (DATA.chunk_size, 2)
    config = TrainConfig(steps=150, batch_size=8, reward_batch_size=8, lr=2e-3, warmup_steps=10, log_every=50)
    history = train_world_model(model, dynamics, reward, config, progress=False)
    assert np.mean(history.answer_loss[-20:]) < 0.5 * np.mean(history.answer_loss[:20])
    scores = score_unseen_reward(model, model.reward_samples(action_outcome_episodes(4, seed=4),
                                                                dataclasses.replace(DATA, yes_oversample=1)))
    assert scores["precision"] >= 0.9 and scores["recall"] >= 0.9 and scores["auroc"] >= 0.95
    # In a rollout the reward is read before the frame is generated: the same views with a success chunk
    # and with a failure chunk get different rewards.
    views = {v: np.full((2, SIZE, SIZE, 3), 60, np.uint8) for v in VIEWS}
    chunks = np.stack([np.full((2, 2), 0.6, np.float32), np.full((2, 2), -0.3, np.float32)])
    _, rewards, _ = model.step(views, chunks, [INSTRUCTION] * 2)
    np.testing.assert_array_equal(rewards, [1.0, 0.0])
    probability = model.transition_success_probability(views, chunks, [INSTRUCTION] * 2)
    np.testing.assert_array_equal(rewards, (probability > model.config.reward_threshold).astype(np.float32))
    # Trained where it is used: also on transitions whose current views the model generated from the real
    # views and chunk before them (a rollout's second chunk on), with the real chunk and label.
    from vla_mbpo_ros.core.world_model.data import GeneratedTransitionSamples

    _, both = model.training_samples(episodes, dataclasses.replace(DATA, generated_reward=True))
    generated = both.datasets[1]
    assert isinstance(generated, GeneratedTransitionSamples) and generated.labels.any() and not generated.labels.all()
    transitions = [(e, t, yes) for e, t, yes in labelled_transitions(episodes, DATA) if t >= DATA.chunk_size]
    assert len(generated.actions) == len(transitions)
    e, t, yes = transitions[-1]
    np.testing.assert_array_equal(generated.actions[-1], episodes[e].actions[t:t + DATA.chunk_size])
    predicted = model.predict({v: episodes[e].views[v][t - DATA.chunk_size:t - DATA.chunk_size + 1] for v in VIEWS},
                              episodes[e].actions[None, t - DATA.chunk_size:t])
    for v in VIEWS:
        np.testing.assert_array_equal(generated.views[v][-1], predicted[v][0])
    item = generated[len(generated) - 1]
    assert item["success"] == yes and set(item["current"]) == set(VIEWS)
    batch = next(iter(torch.utils.data.DataLoader(both, batch_size=len(both))))  # real and generated batch together
    assert batch["current"]["head"].shape[0] == len(both) == len(reward) + len(generated)
    with pytest.raises(ValueError, match="reward_from"):
        WorldModelConfig(view_names=VIEWS, reward_from="frame")


@pytest.fixture(scope="module")
def lerobot_root(tmp_path_factory):
    """A LeRobotDataset on disk: a successful 18-frame episode and a failed 14-frame one."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path_factory.mktemp("lerobot") / "ds"
    image = {"dtype": "image", "shape": (24, 24, 3), "names": ["height", "width", "channels"]}
    features = {
        "observation.images.head": image,
        "observation.images.wrist": image,
        "action": {"dtype": "float32", "shape": (2,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }
    dataset = LeRobotDataset.create("local/wm_test", fps=10, features=features, root=root, use_videos=False)
    for ep, (length, success) in enumerate(zip(LENGTHS, SUCCESSES)):
        for t in range(length):
            dataset.add_frame({
                "observation.images.head": np.full((24, 24, 3), 10 * t, np.uint8),
                "observation.images.wrist": np.full((24, 24, 3), 100 + ep, np.uint8),
                "action": np.array([t, -ep], np.float32),
                "next.success": np.array([success and t == length - 1]),
                "task": INSTRUCTION,
            })
        dataset.save_episode()
    dataset.finalize()
    return root


LENGTHS, SUCCESSES = (18, 14), (True, False)


def test_a_lerobot_dataset_labelled_with_next_success_reads_back_as_episodes(lerobot_root):
    episodes = load_episodes(lerobot_root, VIEWS, SIZE, "local/wm_test")
    assert [len(e) for e in episodes] == list(LENGTHS) and [e.success for e in episodes] == list(SUCCESSES)
    assert episodes[0].views["head"].shape == (18, SIZE, SIZE, 3) and episodes[0].instruction == INSTRUCTION
    assert episodes[0].views["head"][3, 0, 0, 0] == 30 and episodes[1].views["wrist"][0, 0, 0, 0] == 101
    np.testing.assert_array_equal(episodes[1].actions[:, 0], np.arange(14))
    config = DataConfig(chunk_size=4, reward_yes_window=5, reward_no_margin=10, yes_oversample=3)
    dynamics, reward = build_samples(episodes, VIEWS, config)
    assert len(dynamics) == (18 - 4) + (14 - 4)
    item = dynamics[0]
    assert item["actions"].shape == (4, 2) and item["next"]["head"][0, 0, 0] == 40
    # success (18): Yes at 13..17, No before 13 - 10 = 3; failure (14): No before 14 - 10 = 4
    assert reward.labels.sum() == 5 * 3 and (~reward.labels).sum() == 3 + 4
    with pytest.raises(ValueError, match="lacks features"):
        load_episodes(lerobot_root, ("head", "side"), SIZE, "local/wm_test")


def test_cli_train_then_evaluate(lerobot_root, tmp_path):
    import json

    import yaml

    from vla_mbpo_ros.core.world_model import evaluate, train

    sections = read_sections("config/world_model.yaml")
    sections["tiny"].update(image_size=SIZE, tokens_per_side=4, hidden_size=32, num_heads=2, codebook_size=32)
    sections["source"].update(repo_id="local/wm_test", holdout_episodes=1)
    sections["data"].update(chunk_size=3, reward_no_margin=4)
    sections["train"].update(steps=3, batch_size=2, reward_batch_size=2, lr=1e-3, vq_fit_steps=2, vq_fit_batch_size=4)
    sections["eval"].update(max_samples=4, side_by_side_rows=2)
    config = tmp_path / "wm.yaml"
    config.write_text(yaml.safe_dump(sections))
    checkpoint, out = tmp_path / "ckpt", tmp_path / "eval"
    train.main(["--config", str(config), "--dataset-root", str(lerobot_root), "--output", str(checkpoint)])
    summary = json.loads((checkpoint / "train_summary.json").read_text())
    assert summary["train_episodes"] == 1 and summary["held_out_episodes"] == 1
    evaluate.main(["--checkpoint", str(checkpoint), "--config", str(config), "--dataset-root", str(lerobot_root), "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["dynamics"]) >= {"head", "wrist", "seconds_per_branch"}
    assert (out / "real_vs_predicted.png").stat().st_size > 0


def test_auroc_is_the_chance_a_positive_outranks_a_negative():
    from vla_mbpo_ros.core.world_model.evaluate import auroc

    truth = np.array([False, False, True, True])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), truth) == 1.0  # every positive above every negative
    assert auroc(np.array([0.8, 0.9, 0.1, 0.2]), truth) == 0.0
    assert auroc(np.array([0.1, 0.5, 0.5, 0.9]), truth) == pytest.approx(0.875)  # 3 wins and one tie of 4 pairs
    assert auroc(np.full(4, 0.3), truth) == 0.5  # a constant score ranks nothing
    assert np.isnan(auroc(np.array([0.1, 0.9]), np.array([True, True])))  # one class: undefined
