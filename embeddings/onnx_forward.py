"""The ONNX backends' forward pass, run on the model's onnxruntime session directly, in NumPy.

sentence-transformers' ONNX backend wraps the session in torch: it tokenizes through the Hugging Face
tokenizer (whose settings change per call, so calls must be serialised), turns the session's NumPy output
into torch tensors and pools them with torch ops. For one short question that wrapper costs more than the
model: measured on this 2-core machine, a 10-word question took 3.5 ms in the bare session and 6.2-7.3 ms
through ``SentenceTransformer.encode`` (torch's OpenMP threads, woken for the pooling, then compete with
onnxruntime's for the two cores). Here the same steps run without torch: the fast tokenizer (truncated to
the model's ``max_seq_length``, padded to the batch's longest), the session, mean pooling over the
attention mask and L2 normalisation, all in NumPy; the tokenizer and the session are both safe to call from
several threads at once, so questions need no lock.

Only the layout this reproduces exactly is taken over (a transformer, mean pooling, an optional Normalize):
any other pipeline goes through sentence-transformers as before. ``tests/test_backends.py`` checks that the
vectors equal sentence-transformers' own to float32 precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


TOKEN_OUTPUT = "last_hidden_state"  # the exported transformer's contextual token embeddings


class OnnxForward:
    """Texts to ``(token embeddings, unit text vectors)`` through one onnxruntime session."""

    def __init__(self, session: Any, tokenizer: Tokenizer, max_seq_length: int, pad_id: int) -> None:
        self._session = session
        self._inputs = {i.name for i in session.get_inputs()}
        self._outputs = [TOKEN_OUTPUT]
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a private copy: its settings are ours
        self._tokenizer.enable_truncation(max_seq_length)
        self._tokenizer.enable_padding(pad_id=pad_id)  # to the longest text of each batch

    @classmethod
    def of(cls, model: SentenceTransformer) -> OnnxForward | None:
        """The direct forward pass of ``model``, or None when its pipeline is not the one reproduced here
        (an onnxruntime transformer, mean pooling over every token, then an optional Normalize)."""
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

        modules = list(model)
        if len(modules) not in (2, 3) or (len(modules) == 3 and not isinstance(modules[2], Normalize)):
            return None
        session = getattr(getattr(modules[0], "auto_model", None), "session", None)
        pooling = modules[1]
        if session is None or not isinstance(pooling, Pooling):
            return None
        if TOKEN_OUTPUT not in {o.name for o in session.get_outputs()}:
            return None
        config = pooling.get_config_dict()
        if config.get("pooling_mode") != "mean" or not config.get("include_prompt", True):
            return None
        hf_tokenizer = model.tokenizer
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None or hf_tokenizer.pad_token_id is None:
            return None
        return cls(session, backend, int(model.max_seq_length), int(hf_tokenizer.pad_token_id))

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Padded token embeddings ``(n, tokens, dimension)`` and unit mean-pooled vectors ``(n, dimension)``."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        tokens = self._session.run(self._outputs, feed)[0]
        weights = mask.astype(np.float32)
        pooled = np.einsum("bt,btd->bd", weights, tokens) / np.maximum(
            weights.sum(axis=1, keepdims=True), 1e-9
        )
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return tokens, pooled.astype(np.float32)
