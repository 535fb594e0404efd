"""Types of the C module built from ``_native.c`` (see that file for what each call does)."""

import numpy as np

_Buffer = bytes | bytearray | memoryview | np.ndarray

def splice_lines(tokens: _Buffer, offsets: _Buffer, ids: _Buffer, numbers: _Buffer, whole: _Buffer, text: _Buffer,
                 closes: _Buffer, stamps: _Buffer) -> bytes: ...
def write_request(labels: _Buffer, offsets: _Buffer, series: _Buffer, starts: _Buffer, values: _Buffer,
                  stamps: _Buffer) -> bytes: ...
def series_order(ids: _Buffer, n_series: int) -> bytes: ...
