"""Thrift's compact protocol, the little of it Parquet's footer and page headers need: read
(bounded in depth) and write (a page wrapped as a one-column file)."""

from __future__ import annotations

THRIFT_DEPTH_MAX = 32  # structs in structs in a page header or footer, at most


class _Thrift:
    """Just enough of Thrift's compact protocol to read the start of a Parquet footer and
    page headers."""

    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def byte(self) -> int:
        b = self.data[self.i]
        self.i += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def field(self, last: int) -> tuple[int, int]:
        """(field id, type) of the next field; type 0 is the end of the struct."""
        head = self.byte()
        if head == 0:
            return 0, 0
        delta, ftype = head >> 4, head & 0x0F
        return (last + delta if delta else self.zigzag()), ftype

    def skip(self, ftype: int, depth: int = 0) -> None:
        """Past a value of type `ftype` (as a struct field's header gives it)."""
        if depth > THRIFT_DEPTH_MAX:
            raise ValueError("thrift nested too deep")
        if ftype in (1, 2):  # a bool, held in the field header
            return
        if ftype == 3:
            self.i += 1
        elif ftype in (4, 5, 6):
            self.varint()
        elif ftype == 7:
            self.i += 8
        elif ftype == 8:
            length = self.varint()  # NOTE: not `self.i += self.varint()`: i is read first
            self.i += length
        elif ftype in (9, 10):  # a list, a set: its size and element type, then each element
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                self._element(head & 0x0F, depth)
        elif ftype == 11:  # a map: its size, key and value types, then each pair
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self._element(types >> 4, depth)
                self._element(types & 0x0F, depth)
        elif ftype == 12:
            fid = 0
            while True:
                fid, inner = self.field(fid)
                if inner == 0:
                    break
                self.skip(inner, depth + 1)
        else:
            raise ValueError(f"thrift type {ftype}")
        if self.i > len(self.data):
            raise IndexError("thrift cut")

    def _element(self, ftype: int, depth: int) -> None:
        """Past a container's element: a bool there takes a byte of its own."""
        if ftype in (1, 2):
            self.i += 1
            if self.i > len(self.data):
                raise IndexError("thrift cut")
        else:
            self.skip(ftype, depth + 1)


class _ThriftOut:
    """Just enough of Thrift's compact protocol to write a page header and a footer."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.last = [0]  # the last field id, in each struct open

    def varint(self, v: int) -> None:
        while v >= 0x80:
            self.data.append((v & 0x7F) | 0x80)
            v >>= 7
        self.data.append(v)

    def field(self, fid: int, ftype: int) -> None:
        delta = fid - self.last[-1]
        if 0 < delta <= 15:
            self.data.append(delta << 4 | ftype)
        else:
            self.data.append(ftype)
            self.varint((fid << 1) ^ (fid >> 63))
        self.last[-1] = fid

    def i32(self, fid: int, v: int) -> None:
        self.field(fid, 5)
        self.varint((v << 1) ^ (v >> 63))

    def i64(self, fid: int, v: int) -> None:
        self.field(fid, 6)
        self.varint((v << 1) ^ (v >> 63))

    def binary(self, fid: int, v: bytes) -> None:
        self.field(fid, 8)
        self.varint(len(v))
        self.data += v

    def list(self, fid: int, etype: int, size: int) -> None:
        self.field(fid, 9)
        if size < 15:
            self.data.append(size << 4 | etype)
        else:
            self.data.append(0xF0 | etype)
            self.varint(size)

    def begin(self, fid: int) -> None:
        """A struct as field `fid`; end() closes it."""
        self.field(fid, 12)
        self.last.append(0)

    def element(self) -> None:
        """A struct as a list's element; end() closes it."""
        self.last.append(0)

    def end(self) -> None:
        self.data.append(0)
        self.last.pop()

    def stop(self) -> None:
        """The end of the outermost struct."""
        self.data.append(0)
