"""Synthetic corpus (asrllm.data.synth): text selection, speakers, and tiny end-to-end generation.

Text tests read the Debian sources (bible-kjv, fortune-mod, wordnet-base) and audio tests need
espeak-ng and sox; each is skipped with a reason where they are missing.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asrllm.bin.make_synth_corpus import build_config, parse_args
from asrllm.config import ConfigError, load_config
from asrllm.data.synth.corpus import (
    INFO_NAME,
    LM_TEXT_NAME,
    SynthCorpusConfig,
    generate_corpus,
    plan_corpus,
    transcript_files,
)
from asrllm.data.synth.speech import (
    Degradation,
    SynthSpeechConfig,
    colored_noise,
    degrade,
    design_speakers,
    split_rate_pitch_pairs,
)
from asrllm.data.synth.normalize import normalize
from asrllm.data.synth.sources import parse_fortunes, parse_wordnet_examples
from asrllm.data.synth.text import (
    SUBSETS,
    Chunk,
    HeldOutSentences,
    SynthTextConfig,
    _quotas,
    find_proper_names,
    oov_rate,
    read_sources,
    select_text,
    split_passage,
)

REPO = Path(__file__).resolve().parents[2]
TRANSCRIPT = re.compile(r"^[A-Z]+(?:'[A-Z]+)*(?: [A-Z]+(?:'[A-Z]+)*)*$")


def _have_sources() -> bool:
    cfg = SynthTextConfig()
    return (
        shutil.which(cfg.bible_command) is not None
        and Path(cfg.fortunes_dir, "wisdom").exists()
        and Path(cfg.wordnet_dir, "data.noun").exists()
    )


def _have_tts() -> bool:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        return False
    return subprocess.run(["sox", "-h"], capture_output=True).returncode == 0


needs_sources = pytest.mark.skipif(not _have_sources(), reason="needs bible-kjv, fortunes, wordnet-base")
needs_tts = pytest.mark.skipif(
    not (_have_tts() and Path("/usr/share/games/fortunes/wisdom").exists()),
    reason="needs espeak-ng, sox and fortunes",
)

# ---------------------------------------------------------------------------------------------
# Normalisation and splitting


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "And God said, Let there be light: and there was light.",
            "AND GOD SAID LET THERE BE LIGHT AND THERE WAS LIGHT",
        ),
        (
            "Don't look back -- something might be gaining on you.",
            "DON'T LOOK BACK SOMETHING MIGHT BE GAINING ON YOU",
        ),
        (
            "\u201cIt\u2019s a well-known caf\u00e9,\u201d she said\u2014twice!",
            "IT'S A WELL KNOWN CAFE SHE SAID TWICE",
        ),
        ("'Tis the soldiers' song (sung loudly)?", "TIS THE SOLDIERS SONG SUNG LOUDLY"),
        ("  lots   of\tspace  ", "LOTS OF SPACE"),
    ],
)
def test_normalize_examples(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw", ["Psalm 23 is short.", "Cats & dogs", "50% off", "see /usr/bin", "x = y*2", "mail me@home"]
)
def test_normalize_drops_digits_and_symbols(raw: str) -> None:
    assert normalize(raw) is None


def test_split_passage_respects_length_bounds() -> None:
    passage = (
        "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        "and darkness was upon the face of the deep, and the Spirit of God moved upon the waters, "
        "and it was very long indeed, longer than any reasonable sentence should be, and still it went on. "
        "Too short. In 1611 this was printed. Yes!"
    )
    chunks = split_passage(passage, 4, 20)
    assert chunks, passage
    for words in chunks:
        assert 4 <= len(words) <= 20, words
    texts = [" ".join(c) for c in chunks]
    assert "In the beginning God created the heaven and the earth" in texts
    assert not any("1611" in t or "printed" in t for t in texts)  # the sentence with digits is dropped
    assert not any(t.startswith("Too") for t in texts)  # 2 words < min_words


def test_split_passage_cuts_long_sentences_at_clauses() -> None:
    clause = "one two three four five six seven"
    chunks = split_passage(", ".join([clause] * 5) + ".", 4, 20)
    assert [len(c) for c in chunks] == [14, 14, 7]


def test_parsers() -> None:
    assert parse_fortunes("A.\n\t-- B\n%\nC: d e\n%\n") == ["A.", "d e"]
    assert parse_wordnet_examples('0 1 n | gloss; "ex one"; "ex two"  ') == ["ex one", "ex two"]
    assert parse_wordnet_examples("no gloss here") == []


def test_find_proper_names() -> None:
    chunks = [
        Chunk("kjv", ("And", "Moses", "said", "unto", "the", "Lord")),
        Chunk("kjv", ("the", "lord", "of", "the", "house", "and", "I")),
        Chunk("kjv", ("Then", "Moses", "went", "and", "I'm", "here")),
        Chunk("kjv", ("Verily", "I", "say")),
    ]
    names = find_proper_names(chunks, 0.5)
    assert "MOSES" in names
    assert "VERILY" in names  # never seen in lower case: no evidence it is an ordinary word
    assert "LORD" not in names  # capitalised once, lower case once: not above the 0.5 ratio
    assert not {"I", "I'M", "AND", "THE", "SAID"} & names


def test_held_out_sentences_match_word_spans_only() -> None:
    held = HeldOutSentences(["THE LORD SAID", "AMEN"])
    assert held.occurs_in("AND THE LORD SAID UNTO HIM")
    assert held.occurs_in("THE LORD SAID")
    assert held.occurs_in("SAY AMEN")
    assert not held.occurs_in("THE LORD SAIDST")
    assert not held.occurs_in("SAID THE LORD")
    assert not held.occurs_in("AMENS")


def test_quotas_follow_weights_and_redistribute() -> None:
    assert _quotas({"a": 100, "b": 100}, {"a": 0.5, "b": 0.5}, 10) == {"a": 5, "b": 5}
    assert _quotas({"a": 2, "b": 100, "c": 100}, {"a": 0.4, "b": 0.3, "c": 0.3}, 20) == {
        "a": 2,
        "b": 9,
        "c": 9,
    }
    assert sum(_quotas({"a": 3, "b": 4}, {"a": 0.5, "b": 0.5}, 100).values()) == 7


# ---------------------------------------------------------------------------------------------
# Text selection at the default (realistic) size, text only


@pytest.fixture(scope="module")
def default_selection() -> tuple[SynthCorpusConfig, object]:
    if not _have_sources():
        pytest.skip("needs bible-kjv, fortunes, wordnet-base")
    cfg = SynthCorpusConfig()
    return cfg, select_text(cfg.text, read_sources(cfg.text), cfg.sizes(), cfg.seed)


def test_selection_sizes_and_format(default_selection: tuple) -> None:
    cfg, sel = default_selection
    for subset, n in cfg.sizes().items():
        texts = sel.transcripts[subset]
        assert len(texts) == n, subset
        for t in texts:
            assert TRANSCRIPT.match(t), t
            assert cfg.text.min_words <= len(t.split()) <= cfg.text.max_words, t


def test_subsets_are_disjoint_and_lm_text_has_no_dev_test(default_selection: tuple) -> None:
    _, sel = default_selection
    train, dev, test = (set(sel.transcripts[s]) for s in SUBSETS)
    assert len(train) == len(sel.transcripts["train"])  # no duplicates inside a subset
    assert not train & dev and not train & test and not dev & test
    held = dev | test
    lm = sel.lm_lines
    assert len(lm) > 50_000
    assert not set(lm) & held
    # No training transcript or LM line contains a dev/test sentence as a word span (brute force
    # on a sample of the LM text; all of train).
    rng = np.random.default_rng(0)
    sample = [lm[i] for i in rng.choice(len(lm), size=3000, replace=False)] + sel.transcripts["train"]
    for line in sample:
        padded = f" {line} "
        assert not any(f" {h} " in padded for h in held), line


def test_oov_rate_of_dev_and_test_is_small(default_selection: tuple) -> None:
    cfg, sel = default_selection
    train_words = {w for t in sel.transcripts["train"] for w in t.split()}
    for subset in ("dev", "test"):
        assert oov_rate(sel.transcripts[subset], train_words) < 0.02, subset
    all_words = {w for s in SUBSETS for t in sel.transcripts[s] for w in t.split()}
    assert all_words <= set(sel.vocabulary)
    assert len(sel.vocabulary) == cfg.text.vocab_size


def test_transcripts_have_no_common_names_and_balanced_sources(default_selection: tuple) -> None:
    _, sel = default_selection
    words = {w for s in SUBSETS for t in sel.transcripts[s] for w in t.split()}
    assert not words & {"GOD", "ISRAEL", "JESUS", "MOSES", "DAVID", "JERUSALEM", "EGYPT", "UNIX"}
    train_sources = sel.sources["train"]
    for source in ("kjv", "fortunes", "wordnet"):
        share = train_sources.count(source) / len(train_sources)
        assert 0.2 < share < 0.5, (source, share)


# ---------------------------------------------------------------------------------------------
# Speakers, noise, config


def test_held_out_speakers_use_unseen_rate_pitch_combinations() -> None:
    cfg = SynthSpeechConfig()
    speakers = design_speakers(cfg, seed=0)
    assert [len(speakers[s]) for s in SUBSETS] == [80, 10, 10]
    combos = {s: {(k.voice, k.variant, k.rate, k.pitch) for k in speakers[s]} for s in SUBSETS}
    pairs = {s: {(k.rate, k.pitch) for k in speakers[s]} for s in SUBSETS}
    assert len(combos["train"]) == 80  # distinct speakers
    for held in ("dev", "test"):
        assert not combos[held] & combos["train"]
        assert not pairs[held] & pairs["train"]
    assert not pairs["dev"] & pairs["test"]
    grid = split_rate_pitch_pairs(cfg, 0)
    assert sum(len(v) for v in grid.values()) == len(cfg.rates) * len(cfg.pitches)
    ids = [k.spk_id for s in SUBSETS for k in speakers[s]]
    assert len(set(ids)) == len(ids)
    assert design_speakers(cfg, seed=0) == speakers
    assert design_speakers(cfg, seed=1) != speakers


def test_noise_is_mixed_at_the_drawn_snr() -> None:
    rng = np.random.default_rng(0)
    speech = np.sin(np.arange(16000) * 0.05).astype(np.float32) * 0.3
    for color in ("white", "pink", "brown"):
        noise = colored_noise(rng, speech.size, color)
        assert abs(np.mean(noise**2) - 1.0) < 1e-9
    d = Degradation(snr_db=10.0, noise_color="pink", lead_s=0.25, trail_s=0.0, peak=0.5, noise_seed=3)
    out = degrade(speech, d)
    assert out.dtype == np.int16 and out.size == speech.size + 4000
    assert abs(int(np.abs(out).max()) - round(0.5 * 32767)) <= 1
    assert np.array_equal(out, degrade(speech, d))
    x = out.astype(np.float64)
    noise_power = np.mean(x[:4000] ** 2)  # leading silence holds noise only
    signal_power = np.mean(x[4000:] ** 2) - noise_power
    assert abs(10 * np.log10(signal_power / noise_power) - 10.0) < 1.5


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match="num_dev"):
        SynthCorpusConfig(num_dev=0)
    with pytest.raises(ValueError, match="snr_db_min"):
        SynthSpeechConfig(snr_db_min=30.0, snr_db_max=20.0)
    with pytest.raises(ValueError, match="pitches"):
        SynthSpeechConfig(pitches=(120,))
    with pytest.raises(ValueError, match=r"text\.sources"):
        SynthTextConfig(sources=("gutenberg",))
    with pytest.raises(ValueError, match="min_words"):
        SynthTextConfig(min_words=30)
    with pytest.raises(ValueError, match="test_speakers"):
        one_combo_per_pair = SynthSpeechConfig(
            voices=("en-us",), variants=("m1",), rates=(150,), pitches=(10, 20, 30)
        )
        design_speakers(
            dataclasses.replace(one_combo_per_pair, train_speakers=1, dev_speakers=1, test_speakers=2), 0
        )


def test_recipe_config_loads_and_cli_overrides(tmp_path: Path) -> None:
    conf = REPO / "egs/mini_synth/asr1/conf/corpus.yaml"
    recipe = load_config(SynthCorpusConfig, conf)  # the demo's departures from the defaults (docs/mini_synth.md)
    assert recipe.text.vocab_size == 1000 and recipe.speech.rates == (110, 125, 140, 155)
    assert recipe.speech.voices == ("en-us", "en-us-nyc", "en-gb", "en-gb-x-rp")
    assert (recipe.speech.snr_db_min, recipe.speech.snr_db_max) == (10.0, 30.0)
    args = parse_args(
        ["--out-dir", str(tmp_path), "--config", str(conf), "--num-train", "12", "speech.snr_db_min=12"]
    )
    cfg = build_config(args)
    assert cfg.num_train == 12 and cfg.speech.snr_db_min == 12.0 and cfg.num_dev == 300
    assert cfg.text.vocab_size == 1000
    assert build_config(parse_args(["--out-dir", "x", "--seed", "3"])).seed == 3
    with pytest.raises(ConfigError, match="snr_db_mn"):
        build_config(parse_args(["--out-dir", "x", "speech.snr_db_mn=3"]))


# ---------------------------------------------------------------------------------------------
# Tiny end-to-end generation


def _tiny_config(seed: int = 0) -> SynthCorpusConfig:
    return SynthCorpusConfig(
        seed=seed,
        num_train=12,
        num_dev=4,
        num_test=4,
        text=SynthTextConfig(
            sources=("fortunes",), fortune_files=("wisdom", "platitudes", "cookie"), vocab_size=600
        ),
        speech=SynthSpeechConfig(train_speakers=3, dev_speakers=2, test_speakers=2, utts_per_chapter=3),
    )


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".flac", ".txt")
    }


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (_have_tts() and Path("/usr/share/games/fortunes/wisdom").exists()):
        pytest.skip("needs espeak-ng, sox and fortunes")
    out = tmp_path_factory.mktemp("synth_a")
    generate_corpus(_tiny_config(), out)
    return out


@needs_tts
def test_tiny_corpus_has_librispeech_layout(tiny_corpus: Path) -> None:
    root = tiny_corpus / "LibriSpeech"
    cfg = _tiny_config()
    flacs = sorted(root.rglob("*.flac"))
    assert len(flacs) == 20
    ids_from_files = set()
    for f in flacs:
        subset, spk, chapter, name = f.relative_to(root).parts
        assert subset in SUBSETS
        assert re.fullmatch(rf"{spk}-{chapter}-\d{{4}}\.flac", name), name
        audio, sr = sf.read(f, dtype="float32")
        assert sr == 16000 and audio.ndim == 1 and audio.size > 16000 // 2, f
        ids_from_files.add(f.stem)
    ids_from_trans = {}
    for t in root.rglob("*.trans.txt"):
        subset, spk, chapter, name = t.relative_to(root).parts
        assert name == f"{spk}-{chapter}.trans.txt"
        lines = t.read_text().splitlines()
        assert lines == sorted(lines)
        for line in lines:
            utt, text = line.split(" ", 1)
            assert utt.startswith(f"{spk}-{chapter}-") and TRANSCRIPT.match(text), line
            assert (t.parent / f"{utt}.flac").exists()
            ids_from_trans[utt] = (subset, text)
    assert set(ids_from_trans) == ids_from_files
    for subset, n in cfg.sizes().items():
        assert sum(s == subset for s, _ in ids_from_trans.values()) == n
    lm = (tiny_corpus / LM_TEXT_NAME).read_text().splitlines()
    held = {text for s, text in ids_from_trans.values() if s != "train"}
    assert lm and not set(lm) & held
    info = (root / INFO_NAME).read_text()
    assert '"oov_rate_vs_train"' in info and '"hours"' in info


@needs_tts
def test_same_seed_gives_identical_bytes_and_resume_repairs(tiny_corpus: Path, tmp_path: Path) -> None:
    first = _tree_bytes(tiny_corpus)
    generate_corpus(dataclasses.replace(_tiny_config(), num_workers=1), tmp_path)
    assert _tree_bytes(tmp_path) == first  # same seed, other worker count: byte-identical
    # Resume: a missing and a truncated FLAC are rendered again; valid ones are kept as they are.
    flacs = sorted((tmp_path / "LibriSpeech").rglob("*.flac"))
    flacs[0].unlink()
    flacs[1].write_bytes(flacs[1].read_bytes()[:100])
    kept_mtime = flacs[2].stat().st_mtime_ns
    generate_corpus(_tiny_config(), tmp_path)
    assert _tree_bytes(tmp_path) == first
    assert flacs[2].stat().st_mtime_ns == kept_mtime


@needs_tts
def test_other_seed_or_config_differs(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"speech\.snr_db_max"):
        cfg = _tiny_config()
        generate_corpus(
            dataclasses.replace(cfg, speech=dataclasses.replace(cfg.speech, snr_db_max=30.0)), tiny_corpus
        )
    cfg = _tiny_config(seed=1)
    sel = select_text(cfg.text, read_sources(cfg.text), cfg.sizes(), cfg.seed)
    other = transcript_files(plan_corpus(cfg, sel))
    first = {str(p.relative_to(tiny_corpus / "LibriSpeech")): p.read_text()
             for p in (tiny_corpus / "LibriSpeech").rglob("*.trans.txt")}  # fmt: skip
    assert {str(k): v for k, v in other.items()} != first
