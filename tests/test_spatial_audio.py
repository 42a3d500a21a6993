"""Where the sound comes from: stereo synthetic scenes (benchmark v2), the spatial-audio map,
its view through crops and flips, and the model's mask-feature term."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from avis.audio.spatial import (
    SPATIAL_BANDS,
    SPATIAL_BINS,
    band_edges,
    spatial_features,
    window_maps,
)
from avis.data import ClipDataset, ClipSampler, ClipTransform, load_split
from avis.data.synth import SynthConfig, generate_dataset, preset
from avis.data.synth.scene import sample_scene
from avis.data.synth.sound import pan_gains, place_source
from avis.data.synth.writer import stereo_soundtrack
from avis.data.transforms import spatial_view
from avis.errors import DataError, MediaError
from avis.models.spatial_audio import SpatialAudioTerm

SR = 16000
TINY_V2 = SynthConfig(size=48, min_frames=4, max_frames=6, stereo=True)


def _tone(freq: float, seconds: int) -> np.ndarray:
    return (0.1 * np.sin(2 * np.pi * freq * np.arange(seconds * SR) / SR)).astype(np.float32)


def _band_of(freq: float) -> int:
    return int(np.searchsorted(band_edges(SR), freq, side="right") - 1)


def _position_of_bin(j: int) -> float:
    return -1 + (2 * j + 1) / SPATIAL_BINS


@pytest.mark.parametrize("x", [-1.0, -0.55, 0.0, 0.3, 0.8, 1.0])
def test_a_placed_tone_is_read_back_at_its_position_and_band(x):
    stereo = place_source(_tone(1000.0, 2), np.full(2 * SR, x), SR)
    maps = spatial_features(stereo, SR, 2)
    assert maps.shape == (2, SPATIAL_BANDS, SPATIAL_BINS)
    for second in maps:
        band, j = np.unravel_index(second.argmax(), second.shape)
        assert band == _band_of(1000.0)
        assert abs(_position_of_bin(int(j)) - x) <= 1 / SPATIAL_BINS + 1e-6  # the nearest bin


def test_two_sources_at_two_places_and_pitches_are_two_peaks():
    left = place_source(_tone(700.0, 1), np.full(SR, -0.6), SR)
    right = place_source(_tone(1400.0, 1), np.full(SR, 0.5), SR)
    maps = spatial_features(left + right, SR, 1)[0]
    for freq, x in ((700.0, -0.6), (1400.0, 0.5)):
        row = maps[_band_of(freq)]
        assert abs(_position_of_bin(int(row.argmax())) - x) <= 1 / SPATIAL_BINS + 1e-6
    assert maps[_band_of(700.0)].max() > 10 * maps[_band_of(3000.0)].max()


def test_mono_sound_is_at_the_centre_and_silence_is_zero():
    mono = _tone(500.0, 2)
    mono[SR:] = 0.0  # the second second is silent
    maps = spatial_features(mono, SR, 3)  # the third second has no audio at all
    row = maps[0, _band_of(500.0)]
    assert set(np.flatnonzero(row > 0.5 * row.max())) <= {SPATIAL_BINS // 2 - 1, SPATIAL_BINS // 2}
    assert not maps[1].any() and not maps[2].any()
    as_int = spatial_features((mono * 32767).astype(np.int16), SR, 1)
    np.testing.assert_allclose(as_int[0], maps[0], atol=1e-3)
    with pytest.raises(ValueError, match="expected a waveform"):
        spatial_features(np.zeros((SR, 3)), SR, 1)


def test_pan_law_keeps_power_and_the_far_ear_hears_later():
    x = np.linspace(-1, 1, 9)
    left, right = pan_gains(x)
    np.testing.assert_allclose(left**2 + right**2, 2.0)
    np.testing.assert_allclose(pan_gains(np.zeros(1)), [[1.0], [1.0]])
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SR).astype(np.float32)
    stereo = place_source(noise, np.full(SR, 1.0), SR)  # far right: the left ear lags
    lags = np.arange(-20, 21)
    corr = [np.dot(stereo[40:-40, 0], np.roll(stereo[:, 1], lag)[40:-40]) for lag in lags]
    assert 0 < lags[int(np.argmax(corr))] <= 12  # ~0.6 ms at 16 kHz


def test_spatial_view_mirrors_for_a_flip_and_stretches_a_crop():
    maps = np.zeros((2, 3, 8), np.float32)
    maps[:, :, 6] = 1.0  # sound at position bin 6 of 8 (centre at 0.8125 of the width)
    np.testing.assert_array_equal(spatial_view(maps, 0.0, 1.0, True)[..., 1], 1.0)
    right_half = spatial_view(maps, 0.5, 1.0, False)  # at 0.625 of the crop: bins 4.5
    np.testing.assert_allclose(right_half[0, 0, 4:6], 0.75)
    assert right_half[0, 0, :3].max() == 0 and right_half[0, 0, 7] == 0
    left_half = spatial_view(maps, 0.0, 0.5, False)  # the sound is outside the crop
    assert left_half[0, 0].max() < 0.5
    both = spatial_view(maps, 0.5, 1.0, True)
    np.testing.assert_allclose(both, right_half[..., ::-1])


@pytest.fixture(scope="module")
def stereo_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_v2")
    generate_dataset(root, seed=3, counts={"train": 4, "val": 2}, config=TINY_V2, workers=1)
    return root


def test_stereo_set_is_version_2_with_stereo_wavs_and_maps(stereo_set, tmp_path):
    info = json.loads((stereo_set / "train.json").read_text())["info"]
    assert info["avis_synth_version"] == 2 and info["config"]["stereo"] is True
    with wave.open(str(stereo_set / "train" / "WAVAudios" / "train_0000.wav")) as wav:
        assert wav.getnchannels() == 2
    feats = np.load(stereo_set / "train" / "FEATAudios" / "train_0000.npy")
    maps = np.load(stereo_set / "train" / "FEATSpatial" / "train_0000.npy")
    assert feats.shape[1] == 128 and maps.shape == (len(feats), SPATIAL_BANDS, SPATIAL_BINS)
    generate_dataset(tmp_path, seed=3, counts={"train": 1}, config=SynthConfig(size=48, min_frames=4, max_frames=6), workers=1)
    info_v1 = json.loads((tmp_path / "train.json").read_text())["info"]
    assert info_v1["avis_synth_version"] == 1 and "stereo" not in info_v1["config"]
    assert not (tmp_path / "train" / "FEATSpatial").exists()
    assert preset("stereo").version == 2 and preset("easy").version == 1


def test_twins_are_two_sources_at_their_own_places():
    cfg = preset("stereo", size=128)
    for seed in range(300):  # one sounding class, two instances far apart, sounding at once
        scene = sample_scene(np.random.default_rng(seed), 6, cfg)
        c = scene.sounding_classes[0]
        twins = [o for o in scene.objects if o.class_index == c]
        xs = [float(o.center(0.0)[0]) / cfg.size * 2 - 1 for o in twins]
        if len(scene.sounding_classes) == 1 and len(twins) == 2 and scene.sounding[c][0] and abs(xs[0] - xs[1]) > 0.6:
            break
    else:
        pytest.fail("no scene with far-apart twins sounding in the first second")
    maps = spatial_features(stereo_soundtrack(scene, cfg, np.random.default_rng(0)), SR, scene.length)
    profile = maps[0].sum(axis=0)  # the first second's sound over position
    for x in xs:  # a peak near each twin
        j = int(np.clip(round((x + 1) * SPATIAL_BINS / 2 - 0.5), 0, SPATIAL_BINS - 1))
        assert profile[max(j - 1, 0) : j + 2].max() > 2 * np.median(profile)


def test_a_detuned_twin_sounds_at_its_own_pitch():
    from avis.data.synth import SYNTH_CLASSES
    from avis.data.synth.sound import class_signal

    beeper = next(c for c in SYNTH_CLASSES if c.sound == "tone")
    for detune in (1.0, 1.2, 1 / 1.15):
        signal = class_signal(beeper, SR, SR, np.random.default_rng(0), 0.0, detune)
        peak = np.fft.rfftfreq(SR, 1 / SR)[np.abs(np.fft.rfft(signal)).argmax()]
        assert peak == pytest.approx(beeper.params["freq"] * detune, abs=1.0)


def test_clip_dataset_appends_the_map_and_mirrors_it_with_the_frames(stereo_set):
    split = load_split(stereo_set, "train", spatial_audio=True)
    assert split.spatial_shape == (SPATIAL_BANDS, SPATIAL_BINS)
    sampler = ClipSampler(num_frames=2, frame_range=3)
    plain = ClipDataset(split, sampler, ClipTransform(short_sides=(48,)), seed=0)[0]
    flipped = ClipDataset(split, sampler, ClipTransform(short_sides=(48,), flip_prob=1.0), seed=0)[0]
    d = 128
    assert plain.audio.shape == (2, d + SPATIAL_BANDS * SPATIAL_BINS)
    torch.testing.assert_close(plain.audio[:, :d], flipped.audio[:, :d])
    maps = plain.audio[:, d:].view(2, SPATIAL_BANDS, SPATIAL_BINS)
    torch.testing.assert_close(flipped.audio[:, d:].view(2, SPATIAL_BANDS, SPATIAL_BINS), maps.flip(-1))
    torch.testing.assert_close(flipped.frames, plain.frames.flip(-1))
    video = split.videos[0]
    np.testing.assert_array_equal(split.load_audio_input(video)[:, d:].reshape(-1, SPATIAL_BANDS, SPATIAL_BINS), split.load_spatial(video))
    assert load_split(stereo_set, "train").spatial_shape is None


@pytest.mark.parametrize("crop_prob", [0.0, 1.0])
def test_per_frame_flips_mirror_each_frame_with_its_masks_and_map(stereo_set, crop_prob):
    split = load_split(stereo_set, "train", spatial_audio=True)
    sampler = ClipSampler(num_frames=3, frame_range=3)
    make = lambda frame_flip_prob: ClipDataset(  # noqa: E731
        split, sampler, ClipTransform(short_sides=(48,), flip_prob=0.5, crop_prob=crop_prob, frame_flip_prob=frame_flip_prob), seed=2
    )
    plain, per_frame = make(0.0), make(1.0)
    d, mixed = 128, 0
    for epoch in range(6):
        for i in range(len(split.videos)):
            a, b = plain.sample(i, epoch), per_frame.sample(i, epoch)
            # the other draws are the plain clip's: the per-frame coins are the clip's last draws
            assert torch.equal(a.frame_indices, b.frame_indices) and torch.equal(a.track_ids, b.track_ids)
            rng = np.random.default_rng([2, epoch, i])  # replay the clip's draws to read its flips
            video = split.videos[i]
            sampler(video.length, rng)
            flip = per_frame.transform.sample(video.height, video.width, a.frame_indices.numpy(), rng)
            assert flip.frame_flips is not None and len(flip.frame_flips) == 3
            maps_a = a.audio[:, d:].view(3, SPATIAL_BANDS, SPATIAL_BINS)
            maps_b = b.audio[:, d:].view(3, SPATIAL_BANDS, SPATIAL_BINS)
            for k in range(3):
                same = flip.flipped(k) == flip.flip
                view = (lambda x: x) if same else (lambda x: x.flip(-1))  # noqa: E731
                torch.testing.assert_close(b.frames[k], view(a.frames[k]))
                assert torch.equal(b.masks[:, k], view(a.masks[:, k]))
                torch.testing.assert_close(maps_b[k], view(maps_a[k]))
                torch.testing.assert_close(b.audio[k, :d], a.audio[k, :d])
            mixed += len(set(flip.frame_flips)) == 2
    assert mixed > 0  # some clips mirror between their own frames


def test_missing_or_mismatched_maps_are_data_errors(stereo_set, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(stereo_set, root)
    (root / "val" / "FEATSpatial" / "val_0000.npy").unlink()
    with pytest.raises(DataError, match="spatial audio map of video .* not found"):
        load_split(root, "val", spatial_audio=True)
    load_split(root, "val")  # a model without the term does not need them
    np.save(root / "val" / "FEATSpatial" / "val_0000.npy", np.zeros((1, SPATIAL_BANDS, SPATIAL_BINS), np.float32))
    with pytest.raises(DataError, match="rows of spatial audio"):
        load_split(root, "val", spatial_audio=True)


def test_term_columns_follow_the_picture_not_the_padding():
    term = SpatialAudioTerm(bands=2, bins=4, mask_dim=3)
    maps = torch.zeros(2, 2, 4)
    maps[:, 1, 3] = 1.0  # band 1 sounds at the right quarter
    cols = term.columns(maps.flatten(1), [64, 32], grid_width=16)  # frame 2: half the padded width
    assert cols.shape == (2, 2, 16)
    assert cols[0, 1].argmax() >= 12 and cols[0, 0].abs().sum() == 0
    assert cols[1, 1, 6:8].min() > 0.5 and cols[1, 1, 8:].abs().sum() == 0  # padding: nothing
    assert torch.count_nonzero(term(cols, "frame")) == 0  # zero-initialised
    with torch.no_grad():
        term.frame_proj.weight.fill_(1.0)
    added = term(cols, "frame")
    assert added.shape == (2, 3, 1, 16)
    torch.testing.assert_close(added[:, 0, 0], cols.sum(1))


@pytest.mark.parametrize("keys, early", [(False, False), (True, False), (True, True)])
def test_model_with_the_term_starts_as_the_model_without_and_checks_its_input(keys, early):
    from avis.models.avism import build_avism
    from avis.models.config import get_preset

    small = dict(num_classes=3, test_short_side=64)
    base_cfg = get_preset("avism_tiny", **small)
    cfg = get_preset("avism_tiny", spatial_audio_bands=4, spatial_audio_bins=8, spatial_audio_keys=keys,
                     spatial_audio_early=early, **small)  # fmt: skip
    assert cfg.input_audio_dim == cfg.audio_dim + 32 and cfg.spatial_audio and not base_cfg.spatial_audio
    torch.manual_seed(0)
    base = build_avism(base_cfg).eval()
    torch.manual_seed(0)
    model = build_avism(cfg).eval()
    projections = ("frame", "video") + (("key",) if keys else ()) + (("early",) if early else ())
    assert set(model.state_dict()) - set(base.state_dict()) == {
        f"spatial_audio.{p}_proj.{w}" for p in projections for w in ("weight", "bias")
    }
    frames = torch.rand(1, 2, 3, 64, 64) * 255
    audio = torch.randn(1, 2, cfg.audio_dim)
    maps = torch.rand(1, 2, 32)
    with torch.no_grad():
        want = base(frames, audio, [(64, 48)]).video.pred_masks
        got = model(frames, torch.cat([audio, maps], -1), [(64, 48)]).video.pred_masks
        torch.testing.assert_close(got, want)
        model.spatial_audio.video_proj.weight.normal_()
        moved = model(frames, torch.cat([audio, maps], -1), [(64, 48)]).video.pred_masks
        assert not torch.allclose(moved, want)
        if keys:  # the key projection reaches the frame queries
            before = model(frames, torch.cat([audio, maps], -1), [(64, 48)]).frame.frame_queries
            model.spatial_audio.key_proj.weight.normal_()
            after = model(frames, torch.cat([audio, maps], -1), [(64, 48)]).frame.frame_queries
            assert not torch.allclose(before, after)
        if early:  # the early projection reaches the encoder, hence the frame queries and masks
            before = model(frames, torch.cat([audio, maps], -1), [(64, 48)])
            model.spatial_audio.early_proj.weight.normal_()
            after = model(frames, torch.cat([audio, maps], -1), [(64, 48)])
            assert not torch.allclose(before.frame.frame_queries, after.frame.frame_queries)
            assert not torch.allclose(before.video.mask_features, after.video.mask_features)
        chunk = model.encode_chunk(frames[0], torch.cat([audio, maps], -1)[0], (64, 48))
        full = model.forward_features(model.backbone_features(frames, [(64, 48)]), torch.cat([audio, maps], -1), image_widths=[48])
        torch.testing.assert_close(chunk.frame_queries, full.frame.frame_queries[-1])
        with pytest.raises(ValueError, match="must end with the 32 values"):
            model(frames, audio[..., :20], [(64, 48)])
    with pytest.raises(ValueError, match="spatial_audio_bands >= 1"):
        build_avism(get_preset("avism_tiny", spatial_audio_bands=4, spatial_audio_bins=1, **small))


@pytest.fixture(scope="module")
def stereo_mp4(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_v2_mp4")
    cfg = SynthConfig(size=64, min_frames=5, max_frames=5, stereo=True)
    generate_dataset(root, seed=4, counts={"val": 1}, config=cfg, workers=1, mp4_fps=2)
    return root


def test_a_stereo_video_file_gives_the_maps_its_soundtrack_made(stereo_mp4):
    from avis.io.video import frame_spatial_features, read_video

    path = stereo_mp4 / "val" / "MP4" / "val_0000.mp4"
    video = read_video(path, fps=1.0, keep_stereo=True)
    assert video.stereo is not None and video.stereo.shape[1] == 2
    assert read_video(path, fps=1.0).stereo is None  # kept on request only
    maps = frame_spatial_features(video).reshape(-1, SPATIAL_BANDS, SPATIAL_BINS)
    truth = np.load(stereo_mp4 / "val" / "FEATSpatial" / "val_0000.npy")
    assert maps.shape == truth.shape
    # AAC at 64 kb/s changes the fine detail; where the sound is per second survives it
    for got, want in zip(maps, truth):
        if want.sum() > 0:
            assert np.corrcoef(got.sum(0), want.sum(0))[0, 1] > 0.8


# the spatial model's variants the inference paths are checked with: plain, track-level, cues
VARIANTS = {
    "plain": {},
    "track": dict(per_frame_mask_embed=True, spatial_audio_track=True),
    "cues": dict(per_frame_mask_embed=True, spatial_audio_cues=True),
    "early": dict(spatial_audio_keys=True, spatial_audio_early=True),
}


def _spatial_predictor(variant: str = "plain", **kwargs):
    from avis.inference.predictor import VideoPredictor
    from avis.inference.shipped import ModelInfo
    from avis.models.avism import build_avism
    from avis.models.config import get_preset

    cfg = get_preset("avism_tiny", num_classes=8, test_short_side=64, spatial_audio_bands=SPATIAL_BANDS, spatial_audio_bins=SPATIAL_BINS,
                     **VARIANTS[variant])  # fmt: skip
    torch.manual_seed(0)
    model = build_avism(cfg).eval()
    with torch.no_grad():  # the term starts at zero: give it weight, so that the maps matter
        for name, param in model.named_parameters():
            if "spatial" in name:
                param.copy_(torch.randn_like(param))
    info = ModelInfo("random", "avis", [f"c{i}" for i in range(8)], "weight_free")
    return VideoPredictor(model, cfg, info, **kwargs)


def test_predictor_feeds_a_spatial_model_from_a_video_file(stereo_mp4):
    predictor = _spatial_predictor(threshold=0.0)
    path = stereo_mp4 / "val" / "MP4" / "val_0000.mp4"
    prediction = predictor.predict(path)
    assert prediction.masks().shape[1] == 5
    # the maps reach the model: heard at the centre instead, the output changes
    from avis.io.video import frame_audio_features, read_video

    video = read_video(path, keep_stereo=True)
    features = frame_audio_features(video, predictor.extractor)
    centred = np.concatenate([features, spatial_features(video.audio, video.sample_rate, 5).reshape(5, -1)], 1)
    other = predictor.predict((video.frames, centred))
    assert not np.array_equal(prediction.scores, other.scores) or not np.array_equal(prediction.masks(), other.masks())
    # features without the maps: an error that says what is missing
    with pytest.raises(MediaError, match=r"expected audio features \(5, 640\), got \(5, 128\); this model also reads where the sound is"):
        predictor.predict((video.frames, features))


def test_stream_keeps_the_stereo_windows_read_video_keeps(stereo_mp4):
    from avis.io.stream import stream_frames
    from avis.io.video import frame_spatial_features, read_video

    path = stereo_mp4 / "val" / "MP4" / "val_0000.mp4"
    offline = read_video(path, keep_stereo=True)
    items = list(stream_frames(path, keep_stereo=True))
    assert len(items) == offline.num_frames
    maps = np.stack([window_maps(item.stereo, item.sample_rate, np.zeros(1))[0] for item in items])
    assert np.array_equal(maps.reshape(len(items), -1), frame_spatial_features(offline))  # bit for bit
    plain = list(stream_frames(path))
    assert all(a.stereo is None and np.array_equal(a.audio, b.audio) for a, b in zip(plain, items))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_online_mode_runs_a_spatial_model_as_the_offline_path(stereo_mp4, tmp_path, variant):
    """Window = latency + 1 = the video length: the online masks equal the offline ones, so the
    stream's maps are the ones `avis predict` makes (and a window's track-level embedding is
    the whole video's, for ``spatial_audio_track`` models)."""
    from avis.cli.predict_online import run_online
    from avis.inference.online import OnlineOptions, OnlinePredictor
    from avis.inference.online_records import assemble, read_records

    path = stereo_mp4 / "val" / "MP4" / "val_0000.mp4"
    predictor = _spatial_predictor(variant, threshold=0.0, split_components=False)
    offline = predictor.predict(path)
    assert offline.num_instances > 0
    online = OnlinePredictor(predictor, OnlineOptions(latency=4, window=5))
    run_online(online, str(path), tmp_path / "online", overlay=False)
    records = list(read_records(tmp_path / "online" / "online.jsonl"))
    assert len(records) == 5
    prediction, _ = assemble(records, offline.masks().shape[2:], source="x", fps=1.0,
                             class_names=predictor.class_names, audio_features="weight_free")  # fmt: skip
    assert {m.tobytes() for m in prediction.masks()} == {m.tobytes() for m in offline.masks()}


def test_extract_audio_spatial_writes_the_maps_the_generator_made(stereo_set, tmp_path, capsys):
    import shutil

    from avis.cli.main import main

    root = tmp_path / "copy"
    shutil.copytree(stereo_set, root)
    shutil.rmtree(root / "val" / "FEATSpatial")
    assert main(["extract-audio", "--root", str(root), "--split", "val", "--spatial"]) == 0
    for path in sorted((stereo_set / "val" / "FEATSpatial").glob("*.npy")):
        np.testing.assert_allclose(np.load(root / "val" / "FEATSpatial" / path.name), np.load(path), atol=1e-4)
    assert "2 written" in capsys.readouterr().out
    assert main(["extract-audio", "--root", str(root), "--split", "val", "--spatial"]) == 0
    assert "0 written, 2 skipped" in capsys.readouterr().out
    load_split(root, "val", spatial_audio=True)


def test_split_evaluator_feeds_the_maps_to_a_spatial_model(stereo_set):
    from avis.engine.evaluation import SplitEvaluator
    from avis.models.avism import build_avism
    from avis.models.config import get_preset

    cfg = get_preset("avism_tiny", num_classes=8, test_short_side=48, spatial_audio_bands=SPATIAL_BANDS, spatial_audio_bins=SPATIAL_BINS)
    torch.manual_seed(0)
    model = build_avism(cfg).eval()
    evaluator = SplitEvaluator(stereo_set, "val", cfg, [f"c{i}" for i in range(8)], protocols=("fixed",))
    assert evaluator.data.spatial_shape == (SPATIAL_BANDS, SPATIAL_BINS)
    records = evaluator.predict_records(model)
    assert all(r["video_id"] in {v.id for v in evaluator.videos} for r in records)
    metrics = evaluator.score(records)
    assert set(metrics) == {"FSLA", "HOTA", "mAP"}


def test_track_spatial_reads_the_spatial_term_with_one_embedding_per_track():
    """spatial_audio_track: logit_t = e_t . F_t + mean_s(e_s) . S_t, where the plain spatial
    model reads e_t . (F_t + S_t); same parameters, so the two differ by (mean - e_t) . S_t."""
    from avis.models.avism import build_avism
    from avis.models.config import get_preset

    common = dict(num_classes=3, test_short_side=64, spatial_audio_bands=4, spatial_audio_bins=8, per_frame_mask_embed=True)
    cfg = get_preset("avism_tiny", **common)
    plain = build_avism(cfg).eval()
    track = build_avism(get_preset("avism_tiny", spatial_audio_track=True, **common)).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        plain.spatial_audio.video_proj.weight.normal_()
    track.load_state_dict(plain.state_dict(), strict=True)  # no parameters of its own
    terms = []
    hook = track.spatial_audio.register_forward_hook(lambda m, args, out: terms.append(out) if args[1] == "video" else None)
    frames = torch.rand(2, 3, 3, 64, 64) * 255
    audio = torch.cat([torch.randn(2, 3, cfg.audio_dim), torch.rand(2, 3, 32)], -1)
    sizes = [(64, 48), (64, 64)]
    with torch.no_grad():
        want, got = plain(frames, audio, sizes).video, track(frames, audio, sizes).video
    hook.remove()
    (term,) = terms  # (B*T, Cm, 1, Wm)
    cm = want.pred_mask_embed.shape[-1]
    assert got.pred_mask_embed.shape[-1] == 2 * cm  # (Lv, Lf, B, cQ, T, 2 Cm)
    torch.testing.assert_close(got.pred_mask_embed[..., :cm], want.pred_mask_embed)
    mean = want.pred_mask_embed.mean(-2, keepdim=True)
    torch.testing.assert_close(got.pred_mask_embed[..., cm:], mean.expand_as(want.pred_mask_embed))
    term = term.view(2, 3, *term.shape[1:])
    shift = torch.einsum("...bqtc,btchw->...bqthw", mean - want.pred_mask_embed, term)
    assert shift.abs().max() > 1e-3  # the frames' embeddings differ: the readings differ
    torch.testing.assert_close(got.pred_masks, want.pred_masks + shift, rtol=1e-4, atol=1e-4)
    # one frame: its embedding is the track's, the two models agree
    with torch.no_grad():
        one = [m(frames[:, :1], audio[:, :1], sizes).video.pred_masks for m in (plain, track)]
    torch.testing.assert_close(one[1], one[0], rtol=1e-4, atol=1e-4)
    # inference reads the same product: a chunk's features with the decoded video's embeddings
    with torch.no_grad():
        enc = track.encode_chunk(frames[0], audio[0], sizes[0])
        video = track.decode_video(enc.frame_queries, audio[0])
    assert enc.mask_features.shape[1] == 2 * cm
    with torch.no_grad():
        full = track(frames[:1], audio[:1], sizes[:1]).video
    torch.testing.assert_close(video.pred_mask_embed[-1, 0, 0], full.pred_mask_embed[-1, 0, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(spatial_audio_track=True, per_frame_mask_embed=True), "needs spatial_audio_bands"),
        (dict(spatial_audio_early=True), "spatial_audio_early needs spatial_audio_bands"),
        (dict(spatial_audio_track=True, spatial_audio_bands=4, spatial_audio_bins=8), "per-frame mask embeddings"),
        (dict(spatial_audio_track=True, spatial_audio_bands=4, spatial_audio_bins=8, per_frame_mask_embed=True, peak_prior=True), "peak prior"),
    ],
)
def test_track_spatial_needs_its_parts(fields, message):
    from avis.models.avism import build_avism
    from avis.models.config import get_preset

    with pytest.raises(ValueError, match=message):
        build_avism(get_preset("avism_tiny", num_classes=3, **fields))


@pytest.mark.parametrize("variant", ["track", "cues", "early"])
def test_predictor_paths_agree_for_the_spatial_variants(stereo_mp4, variant):
    """Whole-video and memory-bounded inference give the same instances for a track_spatial
    model (the doubled mask features go through both, and through the spill) and for a model
    whose frame queries carry their band profile (spatial_audio_cues)."""
    path = stereo_mp4 / "val" / "MP4" / "val_0000.mp4"
    standard = _spatial_predictor(variant, threshold=0.0, split_components=False, streaming=False).predict(path)
    streamed = _spatial_predictor(variant, threshold=0.0, split_components=False, streaming=True).predict(path)
    assert standard.num_instances > 0
    np.testing.assert_allclose(standard.scores, streamed.scores, rtol=1e-5)
    assert np.array_equal(standard.masks(), streamed.masks())
