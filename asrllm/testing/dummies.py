"""Small synthetic data for tests (lhotse `testing/dummies.py` style): audio, utterances, data dirs,
a LibriSpeech tree, batches and log-probs. Everything is deterministic given `seed`.

Shapes: B utterances, S audio samples, L labels, T frames, V vocabulary.

>>> utts = dummy_utterances(3, seed=1)
>>> [u.id for u in utts]
['dummy-0000', 'dummy-0001', 'dummy-0002']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asrllm.config import save_config
from asrllm.data.audio import SAMPLE_RATE
from asrllm.data.batch import Batch
from asrllm.data.datadir import Utterance, read_datadir, write_datadir
from asrllm.data.tokenizer import Tokenizer, TokenizerConfig, load_tokenizer, train_tokenizer
from asrllm.models.conformer import ConformerConfig
from asrllm.models.ctc_model import CTCModel, CTCModelConfig
from asrllm.train.checkpoint import checkpoint_state_dict, save_model_state

WORDS = (
    "THE QUICK BROWN FOX JUMPS OVER A LAZY DOG AND SHE SELLS SEA SHELLS BY SHORE "
    "IT WAS BEST OF TIMES WORST AGE WISDOM FOOLISHNESS HE SAID NOTHING AT ALL"
).split()


def sine_audio(duration: float, freq: float = 440.0, noise: float = 0.01, seed: int = 0,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A sine tone plus white noise, (S,) float32 with S = round(duration * sample_rate)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration * sample_rate)) / sample_rate
    audio = 0.5 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(len(t))
    return audio.astype(np.float32)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write samples ((S,) mono or (S, C)) with soundfile; the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate)
    return path


def truncate_file(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut a file to `fraction` of its bytes, as an interrupted copy or download would (header kept)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def dummy_text(rng: np.random.Generator, min_words: int = 1, max_words: int = 6) -> str:
    """A few upper-case words from `WORDS`, single spaces (already normalised)."""
    n = int(rng.integers(min_words, max_words + 1))
    return " ".join(rng.choice(WORDS, size=n).tolist())


def dummy_utterances(
    n: int,
    audio_dir: str | Path | None = None,
    seed: int = 0,
    min_duration: float = 0.2,
    max_duration: float = 1.0,
    num_speakers: int = 2,
    suffix: str = ".wav",
) -> list[Utterance]:
    """`n` utterances with random durations (multiples of 1/16000 s) and texts.

    With `audio_dir`, each one's audio (a sine tone) is written there as `<id><suffix>`; without,
    the audio paths point nowhere (enough for samplers and manifests).
    """
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n):
        utt_id = f"dummy-{i:04d}"
        samples = int(rng.integers(round(min_duration * SAMPLE_RATE), round(max_duration * SAMPLE_RATE) + 1))
        duration = samples / SAMPLE_RATE
        path = Path(audio_dir or "/nonexistent") / f"{utt_id}{suffix}"
        if audio_dir is not None:
            write_audio(path, sine_audio(duration, freq=200.0 + 50 * i, seed=seed + i))
        utts.append(Utterance(utt_id, str(path), duration, dummy_text(rng), f"spk{i % num_speakers}"))
    return utts


def make_datadir(data_dir: str | Path, n: int, seed: int = 0, min_duration: float = 0.2,
                 max_duration: float = 1.0) -> list[Utterance]:
    """A data dir of `n` utterances, audio under `data_dir/audio/`; returns them sorted by id."""
    data_dir = Path(data_dir)
    utts = dummy_utterances(n, data_dir / "audio", seed, min_duration, max_duration)
    write_datadir(data_dir, utts)
    return utts


def make_librispeech_tree(
    root: str | Path,
    subset: str = "dev-clean",
    num_speakers: int = 2,
    chapters_per_speaker: int = 2,
    utts_per_chapter: int = 3,
    seed: int = 0,
) -> list[Utterance]:
    """Write `<root>/LibriSpeech/<subset>/<spk>/<chapter>/` with flac files and `.trans.txt`.

    Returns the utterances that `prepare_librispeech` should produce (sorted by id, audio paths
    resolved).
    """
    rng = np.random.default_rng(seed)
    utts: list[Utterance] = []
    for s in range(num_speakers):
        spk = str(100 + s * 11)
        for c in range(chapters_per_speaker):
            chapter = str(2000 + c * 7)
            chapter_dir = Path(root) / "LibriSpeech" / subset / spk / chapter
            lines = []
            for u in range(utts_per_chapter):
                utt_id = f"{spk}-{chapter}-{u:04d}"
                samples = int(rng.integers(SAMPLE_RATE // 4, SAMPLE_RATE))
                text = dummy_text(rng)
                flac = write_audio(chapter_dir / f"{utt_id}.flac", sine_audio(samples / SAMPLE_RATE, seed=len(utts)))
                utts.append(Utterance(utt_id, str(flac.resolve()), samples / SAMPLE_RATE, text, spk))
                lines.append(f"{utt_id} {text}\n")
            (chapter_dir / f"{spk}-{chapter}.trans.txt").write_text("".join(lines), encoding="utf-8")
    return sorted(utts, key=lambda u: u.id)


def dummy_batch(num_utts: int = 2, vocab_size: int = 10, max_samples: int = 1600, max_labels: int = 5,
                seed: int = 0) -> Batch:
    """A random `Batch`: noise audio (B, S) and targets (B, L) in [3, V) (no specials), padded."""
    g = torch.Generator().manual_seed(seed)
    audio_lens = torch.randint(max_samples // 2, max_samples + 1, (num_utts,), generator=g)  # (B,)
    target_lens = torch.randint(1, max_labels + 1, (num_utts,), generator=g)  # (B,)
    audio = torch.randn(num_utts, int(audio_lens.max()), generator=g) * 0.1  # (B, S)
    targets = torch.randint(3, vocab_size, (num_utts, int(target_lens.max())), generator=g)  # (B, L)
    audio[torch.arange(audio.shape[1]) >= audio_lens[:, None]] = 0.0
    targets[torch.arange(targets.shape[1]) >= target_lens[:, None]] = 0
    ids = [f"dummy-{i:04d}" for i in range(num_utts)]
    return Batch(ids, audio, audio_lens, targets, target_lens, [f"TEXT {i}" for i in range(num_utts)])


def random_log_probs(num_utts: int, num_frames: int, vocab_size: int, seed: int = 0,
                     lengths: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random log-softmax outputs (B, T, V) and their lengths (B,) (all T unless `lengths`)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_utts, num_frames, vocab_size, generator=g)  # (B, T, V)
    lens = torch.full((num_utts,), num_frames, dtype=torch.int64) if lengths is None else torch.tensor(lengths)
    return logits.log_softmax(dim=-1), lens


def make_char_tokenizer(data_dir: str | Path, out_dir: str | Path) -> Tokenizer:
    """A character tokenizer trained on the transcripts of the data dir `data_dir`, saved in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_file = out_dir / "train_text.txt"
    text_file.write_text("".join(f"{u.text}\n" for u in read_datadir(data_dir)), encoding="utf-8")
    return train_tokenizer(TokenizerConfig(kind="char"), text_file, out_dir)


def make_ctc_exp_dir(exp: Path, seed: int, name: str = "model_avg.safetensors") -> None:
    """An experiment dir of an untrained tiny CTC model, as training leaves it for decoding: the
    char tokenizer of `<exp>/../data/dev`, config.yaml and the weights `name` (seeded)."""
    tok_dir = exp / "tokenizer"
    tok = load_tokenizer(tok_dir) if tok_dir.exists() else make_char_tokenizer(exp.parent / "data/dev", tok_dir)
    cfg = CTCModelConfig(vocab_size=tok.vocab_size, encoder=ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32))
    save_config({"model_kind": "ctc", "model": cfg}, exp / "config.yaml")
    torch.manual_seed(seed)
    path = exp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_state(CTCModel(cfg).state_dict(), path)


def make_speech_llm_exp_dir(exp: Path, tokenizer_dir: Path, seed: int, aux_ctc_weight: float = 0.3) -> None:
    """An untrained tiny speech-LLM exp dir in the AM's labels (the char tokenizer of tokenizer_dir,
    copied into it as training does), with an aux CTC head unless aux_ctc_weight is 0."""
    from asrllm.data.tokenizer import save_tokenizer
    from asrllm.models.llm import LLMConfig
    from asrllm.models.speech_llm import PromptConfig, SpeechLLM, SpeechLLMConfig

    arch = dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    cfg = SpeechLLMConfig(llm=LLMConfig(arch=arch), label_unit="am_tokenizer", am_tokenizer=str(tokenizer_dir),
                          encoder=ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32),
                          prompt=PromptConfig("", ""), aux_ctc_weight=aux_ctc_weight)
    save_config({"model_kind": "speech_llm", "model": cfg}, exp / "config.yaml")
    save_tokenizer(load_tokenizer(tokenizer_dir), exp / "tokenizer")
    torch.manual_seed(seed)
    save_model_state(checkpoint_state_dict(SpeechLLM(cfg)), exp / "model_avg.safetensors")


def make_lm_exp_dir(lm_dir: Path, tokenizer_dir: Path, seed: int) -> None:
    """An untrained tiny LM exp dir over the AM's labels (as stage 8 leaves a re-vocabularised LM)."""
    from asrllm.models.llm import LLMConfig
    from asrllm.models.lm_model import LMModel, LMModelConfig

    cfg = LMModelConfig(llm=LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2)),
                        label_unit="am_tokenizer", am_tokenizer=str(tokenizer_dir))
    save_config({"model_kind": "lm", "model": cfg}, lm_dir / "config.yaml")
    torch.manual_seed(seed)
    save_model_state(checkpoint_state_dict(LMModel(cfg)), lm_dir / "model_avg.safetensors")
