"""Synthetic LibriSpeech-layout corpus for egs/mini_synth: public-domain text + espeak-ng speech.

`generate_corpus(SynthCorpusConfig(...), out_dir)` builds it; see docs/mini_synth.md for the design.
"""

from asrllm.data.synth.corpus import SynthCorpusConfig, UttPlan, generate_corpus, plan_corpus
from asrllm.data.synth.normalize import normalize
from asrllm.data.synth.speech import Speaker, SynthSpeechConfig, design_speakers
from asrllm.data.synth.text import SynthTextConfig, TextSelection, read_sources, select_text

__all__ = [
    "Speaker",
    "SynthCorpusConfig",
    "SynthSpeechConfig",
    "SynthTextConfig",
    "TextSelection",
    "UttPlan",
    "design_speakers",
    "generate_corpus",
    "normalize",
    "plan_corpus",
    "read_sources",
    "select_text",
]
