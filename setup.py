"""asrllm: LLM-based speech recognition recipes (speech LLMs vs. LLM shallow fusion)."""

from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="asrllm",
    version="0.1.0",
    description="ESPnet-style recipes for LLM-based ASR: speech LLMs and LLM shallow fusion",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["asrllm", "asrllm.*"]),
    package_data={"asrllm.eval": ["spelling/*.json"]},  # the normalisers' spelling maps
    install_requires=requirements,
)
