"""How stored hits are compressed: zstandard, with a dictionary trained on
the stream's own hits once there are enough of them.

A store chunk often holds one or two hits (what a proto-session received
since the last snapshot). Alone, a 660-byte hit compresses to about 520
bytes in a plain frame; with a 16 KiB dictionary trained on a few hundred
of the stream's hits (one property's hits share most of their bytes) it
takes about 120, and compresses about 4x faster (`bench/state_store.py`).
A frame names its dictionary by id; a store keeps the dictionaries its
chunks use (`Dictionaries.register` on open), so any process can read them.
"""

from __future__ import annotations

import pickle
import threading
from typing import Iterable

import zstandard

from .perthread import PerThread

StoredHit = tuple  # (t, hit bytes with the ACID set, hit id)

TRAIN_SAMPLES = 300  # hits a process sees before it trains its dictionary
DICTIONARY_BYTES = 16 * 1024


class DictionaryConflict(ValueError):
    """Two different dictionaries with one id (a store from another stream)."""


class Dictionaries:
    """The process's dictionaries by id, and the one it compresses with
    (trained from the first `TRAIN_SAMPLES` hits offered). Thread-safe:
    Bytewax runs a process's workers as threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.known: dict[int, bytes] = {}
        self.current = 0  # id of the dictionary new chunks use (0: none yet)
        self._samples: list[bytes] = []

    def register(self, dict_id: int, data: bytes) -> None:
        with self._lock:
            kept = self.known.get(dict_id)
            if kept is not None and kept != data:
                raise DictionaryConflict(f"two compression dictionaries have the id {dict_id}")
            self.known[dict_id] = data

    def offer(self, hits: Iterable[StoredHit]) -> None:
        """Samples for training, until the dictionary exists."""
        if self.current:
            return
        with self._lock:
            if self.current:
                return
            for h in hits:
                self._samples.append(pickle.dumps([h], protocol=5))
                if len(self._samples) >= TRAIN_SAMPLES:
                    break
            if len(self._samples) < TRAIN_SAMPLES:
                return
            try:
                trained = zstandard.train_dictionary(DICTIONARY_BYTES, self._samples)
            except zstandard.ZstdError:  # samples too alike or too few bytes: go on without
                self._samples = []
                return
            self._samples = []
            self.known[trained.dict_id()] = trained.as_bytes()
            self.current = trained.dict_id()


dictionaries = Dictionaries()


class _Codec:
    """Zstandard level 1, one (de)compressor per thread and dictionary (a
    zstd context is not thread-safe). Against zlib level 1 on 64 KiB of
    hits: about 5x faster to compress, 4x to decompress, and smaller
    (bench: `python bench/compaction.py`)."""

    def __init__(self) -> None:
        self.compressors = {0: zstandard.ZstdCompressor(level=1).compress}
        self.decompressors = {0: zstandard.ZstdDecompressor().decompress}

    def compressor(self, dict_id: int):
        c = self.compressors.get(dict_id)
        if c is None:
            d = zstandard.ZstdCompressionDict(dictionaries.known[dict_id])
            d.precompute_compress(level=1)  # else each call loads the dictionary again
            c = self.compressors[dict_id] = zstandard.ZstdCompressor(level=1, dict_data=d).compress
        return c

    def decompressor(self, dict_id: int):
        c = self.decompressors.get(dict_id)
        if c is None:
            data = dictionaries.known.get(dict_id)
            if data is None:
                raise ValueError(f"stored hits compressed with dictionary {dict_id}, "
                                 "which the store does not hold")
            d = zstandard.ZstdCompressionDict(data)
            c = self.decompressors[dict_id] = zstandard.ZstdDecompressor(dict_data=d).decompress
        return c


_codecs: PerThread[_Codec] = PerThread(_Codec)


def compress_hits(hits: list[StoredHit], dict_id: int = 0) -> bytes:
    # Copied out: zstandard's result keeps the allocation of the worst-case
    # size (4-7x the compressed bytes here), which a kept block would pin.
    return bytes(memoryview(_codecs.get().compressor(dict_id)(pickle.dumps(hits, protocol=5))))


def decompress_hits(blob: bytes) -> list[StoredHit]:
    # the frame header's descriptor (byte 4) says whether a dictionary id follows
    dict_id = zstandard.get_frame_parameters(blob).dict_id if len(blob) > 4 and blob[4] & 3 else 0
    return pickle.loads(_codecs.get().decompressor(dict_id)(blob))
