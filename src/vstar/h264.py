"""Which H.264 pictures the frames a decoder must output depend on, read from parameter sets and slice headers
(no decoding), so `vstar.video` can leave out the work on reference pictures that no frame it needs refers to.

x264's default B-pyramid makes one B-frame of every group a reference picture for the B-frames around it. Those
B-frames are left undecoded on the way to a target (nothing refers to them), and then the reference B-frame is not
needed either, as long as no P-frame decoded later refers to it (x264 names the P-frame before it in every P slice).
Such a picture cannot simply be left out: the decoder's reference bookkeeping (frame numbers, the marking commands in
its header) must see it, or frames decoded after it differ. `Picture.header_bytes` says how much of each slice is
its header: a packet cut down to the headers keeps the bookkeeping exact and costs almost nothing to decode (the
picture itself comes out wrong, and nothing uses it).

Everything the analysis does not model (field pictures, long-term references, slice groups, gaps in frame numbers,
redundant slices, SVC/MVC) makes `removable` answer with nothing removable: the safe answer.

```python
from vstar.h264 import NalFormat, removable
fmt = NalFormat.from_extradata(stream.codec_context.extradata)
coded = [fmt.scan(packet) for packet in container.demux(stream) if packet.size]  # decode order
pictures = [c.picture() for c in coded[idr:last + 1]]
cut = removable(pictures, needed={target - idr for target in targets})  # positions from `idr`
fmt.headers_only(bytes(packet), pictures[i].header_bytes)  # what to send for a picture in `cut`
```
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Payload bytes of a slice read for its header (kept for every packet of a video, so few): x264's headers take under
# 20, weight tables for a few references fit; a longer header makes its picture unknown, so nothing is removed.
_HEADER_WINDOW = 128
# NAL bytes kept for that: room for emulation-prevention bytes.
_KEPT = _HEADER_WINDOW + 32
# Bytes of slice data kept after the header: the decoder needs some to start on the slice, then stops at its end.
_SLACK = 2
_SLICE, _IDR, _SEI, _SPS, _PPS = 1, 5, 6, 7, 8
# Partitioned slices, prefix and subset-SPS / extension NALs (SVC, MVC): not modelled.
_UNSUPPORTED_NALS = frozenset({2, 3, 4, 14, 15, 20, 21})
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_P, _B, _I, _SP, _SI = 0, 1, 2, 3, 4


class Unsupported(Exception):
    """The stream uses something the analysis does not model."""


class _Bits:
    """An RBSP read MSB first, exp-Golomb codes included."""

    def __init__(self, data: bytes):
        self.size = len(data) * 8
        self.value = int.from_bytes(data, "big")
        self.pos = 0

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        self.pos += n
        if self.pos > self.size:
            raise Unsupported("header longer than the bytes read")
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        rest = self.value & ((1 << (self.size - self.pos)) - 1)
        zeros = self.size - self.pos - rest.bit_length()
        if zeros > 31 or rest == 0:
            raise Unsupported("bad exp-Golomb code")
        self.pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """The payload without its header byte and emulation-prevention bytes."""
    return nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")


def _nal_offset(nal: bytes, rbsp_bytes: int) -> int:
    """The offset in `nal` just past its first `rbsp_bytes` payload bytes (emulation-prevention bytes counted)."""
    offset, removed = 1, 0
    start = nal.find(b"\x00\x00\x03", 1)
    while start != -1 and start + 2 - 1 - removed < rbsp_bytes:
        removed += 1
        start = nal.find(b"\x00\x00\x03", start + 3)
    return offset + rbsp_bytes + removed


@dataclass(frozen=True)
class Sps:
    chroma_array_type: int
    separate_colour_plane: bool
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    delta_pic_order_always_zero: bool
    max_num_ref_frames: int


@dataclass(frozen=True)
class Pps:
    sps_id: int
    cabac: bool
    bottom_field_pic_order_in_frame_present: bool
    num_ref_idx_default: tuple[int, int]
    weighted_pred: bool
    weighted_bipred_idc: int
    deblocking_filter_control_present: bool
    redundant_pic_cnt_present: bool


def _scaling_list(bits: _Bits, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + bits.se() + 256) % 256
        last = following or last


def parse_sps(nal: bytes) -> tuple[int, Sps]:
    bits = _Bits(_rbsp(nal))
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    sps_id = bits.ue()
    chroma_format, separate = 1, False
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            separate = bool(bits.u(1))
        bits.ue(), bits.ue(), bits.u(1)  # bit depths, transform bypass
        if bits.u(1):
            for i in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    _scaling_list(bits, 16 if i < 6 else 64)
    log2_max_frame_num = bits.ue() + 4
    poc_type = bits.ue()
    log2_max_poc_lsb, always_zero = 0, False
    if poc_type == 0:
        log2_max_poc_lsb = bits.ue() + 4
    elif poc_type == 1:
        always_zero = bool(bits.u(1))
        bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    max_refs = bits.ue()
    if bits.u(1):
        raise Unsupported("gaps in frame numbers allowed")
    bits.ue(), bits.ue()  # size in macroblocks
    if not bits.u(1):
        raise Unsupported("field pictures")
    chroma_array_type = 0 if separate else chroma_format
    return sps_id, Sps(
        chroma_array_type, separate, log2_max_frame_num, poc_type, log2_max_poc_lsb, always_zero, max_refs
    )


def parse_pps(nal: bytes) -> tuple[int, Pps]:
    bits = _Bits(_rbsp(nal))
    pps_id, sps_id = bits.ue(), bits.ue()
    cabac = bool(bits.u(1))
    bottom = bool(bits.u(1))
    if bits.ue():
        raise Unsupported("slice groups")
    defaults = (bits.ue() + 1, bits.ue() + 1)
    weighted_pred = bool(bits.u(1))
    bipred = bits.u(2)
    bits.se(), bits.se(), bits.se()  # initial QP, QS, chroma QP offset
    deblocking = bool(bits.u(1))
    bits.u(1)  # constrained intra prediction
    redundant = bool(bits.u(1))
    return pps_id, Pps(sps_id, cabac, bottom, defaults, weighted_pred, bipred, deblocking, redundant)


@dataclass
class Slice:
    """What the analysis needs of one slice header."""

    kind: int  # _P, _B, _I, _SP, _SI
    frame_num: int
    idr: bool
    ref: bool  # nal_ref_idc != 0
    num_ref_idx: tuple[int, int]
    # modification commands of list 0 and list 1: (idc, value), idc 0/1 short-term differences, 2 long-term
    modification: tuple[list[tuple[int, int]], list[tuple[int, int]]]
    # difference_of_pic_nums_minus1 of each "unmark short-term" command; None: sliding window marking
    unmark: list[int] | None
    header_bytes: int  # bytes of the NAL (header byte included) up to the end of the slice header
    max_frame_num: int
    max_num_ref_frames: int
    poc_type: int
    poc_lsb: int  # pic_order_cnt_lsb (type 0)
    poc_bottom: int  # delta_pic_order_cnt_bottom (type 0)
    max_poc_lsb: int


def parse_slice(nal: bytes, params: Params) -> Slice:
    nal_type, ref = nal[0] & 31, bool(nal[0] >> 5 & 3)
    rbsp = _rbsp(nal[:_KEPT])[:_HEADER_WINDOW]
    bits = _Bits(rbsp)
    bits.ue()  # first macroblock
    kind = bits.ue() % 5
    pps = params.pps.get(bits.ue())
    sps = params.sps.get(pps.sps_id) if pps is not None else None
    if pps is None or sps is None:
        raise Unsupported("slice before its parameter sets, or sets not modelled")
    if sps.separate_colour_plane:
        bits.u(2)
    frame_num = bits.u(sps.log2_max_frame_num)
    idr = nal_type == _IDR
    if idr:
        bits.ue()
    poc_lsb = poc_bottom = 0
    if sps.poc_type == 0:
        poc_lsb = bits.u(sps.log2_max_poc_lsb)
        if pps.bottom_field_pic_order_in_frame_present:
            poc_bottom = bits.se()
    elif sps.poc_type == 1 and not sps.delta_pic_order_always_zero:
        bits.se()
        if pps.bottom_field_pic_order_in_frame_present:
            bits.se()
    if pps.redundant_pic_cnt_present and bits.ue():
        raise Unsupported("redundant slices")
    if kind == _B:
        bits.u(1)  # direct_spatial_mv_pred_flag
    num_ref_idx = pps.num_ref_idx_default
    if kind in (_P, _SP, _B):
        if bits.u(1):
            num_ref_idx = (bits.ue() + 1, bits.ue() + 1 if kind == _B else num_ref_idx[1])
    lists = []
    for _ in range(2 if kind == _B else 1 if kind in (_P, _SP) else 0):
        commands = []
        if bits.u(1):
            while (idc := bits.ue()) != 3:
                if idc > 2:
                    raise Unsupported("list modification")
                commands.append((idc, bits.ue()))
        lists.append(commands)
    if (pps.weighted_pred and kind in (_P, _SP)) or (pps.weighted_bipred_idc == 1 and kind == _B):
        _skip_weights(bits, sps, num_ref_idx, kind == _B)
    unmark: list[int] | None = None
    if ref:
        if idr:
            bits.u(1)
            if bits.u(1):
                raise Unsupported("long-term reference")
        elif bits.u(1):
            unmark = []
            while (op := bits.ue()) != 0:
                if op != 1:
                    raise Unsupported("long-term marking")
                unmark.append(bits.ue())
    if pps.cabac and kind not in (_I, _SI):
        bits.ue()
    bits.se()  # slice_qp_delta
    if kind in (_SP, _SI):
        if kind == _SP:
            bits.u(1)
        bits.se()
    if pps.deblocking_filter_control_present and bits.ue() != 1:
        bits.se(), bits.se()
    header_bytes = _nal_offset(nal, (bits.pos + 7) // 8)
    return Slice(
        kind,
        frame_num,
        idr,
        ref,
        num_ref_idx,
        ((lists + [[], []])[0], (lists + [[], []])[1]),
        unmark,
        header_bytes,
        1 << sps.log2_max_frame_num,
        sps.max_num_ref_frames,
        sps.poc_type,
        poc_lsb,
        poc_bottom,
        1 << sps.log2_max_poc_lsb,
    )


def _skip_weights(bits: _Bits, sps: Sps, num_ref_idx: tuple[int, int], both: bool) -> None:
    bits.ue()
    if sps.chroma_array_type:
        bits.ue()
    for count in num_ref_idx[: 2 if both else 1]:
        for _ in range(count):
            if bits.u(1):
                bits.se(), bits.se()
            if sps.chroma_array_type and bits.u(1):
                for _ in range(4):
                    bits.se()


@dataclass
class Params:
    """The parameter sets seen so far (ids to parsed sets); replaced, not changed, when one is redefined."""

    sps: dict[int, Sps] = field(default_factory=dict)
    pps: dict[int, Pps] = field(default_factory=dict)

    def updated(self, nals: Iterable[bytes]) -> Params:
        current = self
        for nal in nals:
            kind = nal[0] & 31
            if kind not in (_SPS, _PPS):
                continue
            try:
                key, value = parse_sps(nal) if kind == _SPS else parse_pps(nal)
            except Unsupported:
                # A set this analysis cannot follow (None): slices that use it make the analysis give up.
                try:
                    key, value = _set_id(nal), None
                except Unsupported:
                    return Params()  # not even its id: no set can be trusted from here on
            table = current.sps if kind == _SPS else current.pps
            if key not in table or table[key] != value:
                replaced = {**table, key: value}
                current = Params(replaced, current.pps) if kind == _SPS else Params(current.sps, replaced)
        return current


def _set_id(nal: bytes) -> int:
    bits = _Bits(_rbsp(nal[:64]))
    if nal[0] & 31 == _SPS:
        bits.u(24)
    return bits.ue()


@dataclass
class Picture:
    """One coded picture (a packet): its slices' headers, or why they are not understood."""

    slices: list[Slice]
    problem: str | None = None

    @property
    def header_bytes(self) -> list[int]:
        return [s.header_bytes for s in self.slices]


@dataclass(frozen=True)
class Coded:
    """What the demux pass keeps of one packet: the parameter sets in effect and the start of each slice NAL."""

    params: Params
    slices: tuple[bytes, ...]
    problem: str | None = None

    def picture(self) -> Picture:
        """Parse the slice headers (done only for the packets a decode plan looks at)."""
        if self.problem:
            return Picture([], self.problem)
        try:
            return Picture([parse_slice(nal, self.params) for nal in self.slices])
        except Unsupported as err:
            return Picture([], str(err))
        except (IndexError, ValueError) as err:  # a damaged header: the decoder will say what it makes of it
            return Picture([], f"unreadable slice header ({err})")


def is_intra(coded: Coded) -> bool:
    """Whether a keyframe packet holds an intra picture (or one this analysis cannot read): an intra-refresh stream
    (x264 `--intra-refresh`) flags P-frames with a recovery point as keyframes, and decoding from one of those gives
    other frames than a player shows until the refresh has swept the picture."""
    picture = coded.picture()
    return bool(picture.problem) or all(s.kind in (_I, _SI) for s in picture.slices)


class NalFormat:
    """How a stream's packets hold NAL units: length-prefixed (MP4, Matroska: avcC extradata) or Annex B start
    codes (MPEG-TS, raw streams); tracks the parameter sets (extradata, then in-band) in decode order."""

    def __init__(self, length_size: int | None, params: Params):
        self.length_size = length_size
        self.params = params

    @classmethod
    def from_extradata(cls, extradata: bytes | None) -> NalFormat:
        data = bytes(extradata or b"")
        if len(data) >= 7 and data[0] == 1:
            length_size = (data[4] & 3) + 1
            nals, pos = [], 5
            # avcC: the SPS count (5 bits) and SPSs, then the PPS count (8 bits) and PPSs, each with a 2-byte size.
            for mask in (31, 255):
                if pos >= len(data):
                    break
                count, pos = data[pos] & mask, pos + 1
                for _ in range(count):
                    size = int.from_bytes(data[pos : pos + 2], "big")
                    nals.append(data[pos + 2 : pos + 2 + size])
                    pos += 2 + size
            return cls(length_size, Params().updated(n for n in nals if n))
        fmt = cls(None, Params())
        fmt.params = fmt.params.updated(data[start:end] for start, end in fmt.nals(data))
        return fmt

    def nals(self, data) -> list[tuple[int, int]]:
        """(start, end) of each NAL unit in a packet (bytes, or a memoryview for length-prefixed ones)."""
        spans = []
        if self.length_size is not None:
            pos, size = 0, self.length_size
            while pos + size <= len(data):
                length = int.from_bytes(data[pos : pos + size], "big")
                spans.append((pos + size, min(len(data), pos + size + length)))
                pos += size + length
            return [span for span in spans if span[1] > span[0]]
        starts = []
        pos = data.find(b"\x00\x00\x01")
        while pos != -1:
            starts.append(pos + 3)
            pos = data.find(b"\x00\x00\x01", pos + 3)
        for i, start in enumerate(starts):
            end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
            # A four-byte start code leaves its leading zero at the end of the NAL before it.
            while end > start and data[end - 1] == 0:
                end -= 1
            if end > start:
                spans.append((start, end))
        return spans

    def scan(self, packet) -> Coded:
        """One packet in decode order (anything with the buffer protocol): cheap, for every packet."""
        data = memoryview(packet) if self.length_size is not None else bytes(packet)
        slices = []
        problem = None
        for start, end in self.nals(data):
            kind = data[start] & 31
            if kind in (_SLICE, _IDR):
                slices.append(bytes(data[start : min(end, start + _KEPT)]))
            elif kind in (_SPS, _PPS):
                self.params = self.params.updated([bytes(data[start:end])])
            elif kind in _UNSUPPORTED_NALS:
                problem = f"NAL unit type {kind}"
        return Coded(self.params, tuple(slices), problem or (None if slices else "no slice"))

    def headers_only(self, data: bytes, header_bytes: list[int]) -> bytes:
        """The packet with every slice cut down to its header (and a few bytes of data): the decoder still does its
        reference bookkeeping for the picture, but decodes almost none of it."""
        out = bytearray()
        slice_number = 0
        for start, end in self.nals(data):
            if data[start] & 31 in (_SLICE, _IDR):
                end = min(end, start + header_bytes[slice_number] + _SLACK)
                slice_number += 1
            if self.length_size is not None:
                out += (end - start).to_bytes(self.length_size, "big")
            else:
                out += b"\x00\x00\x00\x01"
            out += data[start:end]
        return bytes(out)


def removable(pictures: list[Picture], needed: set[int]) -> set[int]:
    """Positions of the reference pictures that no needed picture depends on, among `pictures` (decode order,
    starting at an IDR picture, ending with the last needed one). A needed picture depends on every picture in its
    slices' reference lists, built as the decoder builds them: the pictures held (sliding window and "unmark"
    commands), in default order (P: frame numbers; B: picture order counts), modification commands, cut to the
    lists' lengths. Anything not modelled: nothing is removable."""
    if not pictures or any(p.problem for p in pictures) or not pictures[0].slices[0].idr:
        return set()
    try:
        refers = _references(pictures)
    except Unsupported:
        return set()
    keep = set(needed)
    for position in range(len(pictures) - 1, -1, -1):
        if position in keep:
            keep |= refers[position]
    return {i for i, p in enumerate(pictures) if p.slices[0].ref and not p.slices[0].idr and i not in keep}


def _references(pictures: list[Picture]) -> list[set[int]]:
    held: list[int] = []  # positions of the short-term reference pictures held
    frame_nums: dict[int, int] = {}
    pocs: dict[int, int] = {}
    refers: list[set[int]] = []
    previous_ref_frame_num = None
    poc = _Poc()
    for position, picture in enumerate(pictures):
        first = picture.slices[0]
        if len({(s.frame_num, s.idr, s.ref, s.max_frame_num, s.poc_lsb) for s in picture.slices}) != 1:
            raise Unsupported("slices of one picture disagree")
        max_frame_num, current = first.max_frame_num, first.frame_num
        if first.idr:
            held = []
        elif previous_ref_frame_num is None or current != (previous_ref_frame_num + 1) % max_frame_num:
            raise Unsupported("gap in frame numbers")
        pocs[position] = poc.next(first)
        # PicNum of each held picture (FrameNumWrap: frame numbers past the current one wrapped around).
        pic_nums = {h: frame_nums[h] - max_frame_num if frame_nums[h] > current else frame_nums[h] for h in held}
        targets: set[int] = set()
        for s in picture.slices:
            if s.kind == _B:
                targets.update(_b_lists(s, pic_nums, pocs, position, max_frame_num))
            elif s.kind not in (_I, _SI):
                initial = sorted(pic_nums, key=pic_nums.__getitem__, reverse=True)
                targets.update(
                    _modified(initial, s.modification[0], s.num_ref_idx[0], pic_nums, current, max_frame_num)
                )
        refers.append(targets)
        if first.ref:
            if first.unmark is not None:
                for difference in first.unmark:
                    matches = [h for h in held if pic_nums[h] == current - (difference + 1)]
                    if not matches:
                        raise Unsupported("unmarking a picture not held")
                    held.remove(matches[0])
            elif len(held) >= max(1, first.max_num_ref_frames):
                held.remove(min(held, key=pic_nums.__getitem__))
            held.append(position)
            frame_nums[position] = current
            previous_ref_frame_num = current
    return refers


class _Poc:
    """Picture order counts (8.2.1) of frames in decode order, types 0 and 2; type 1 is not modelled."""

    def __init__(self):
        self.msb = self.lsb = 0  # of the previous reference picture (type 0)
        self.offset = 0  # FrameNumOffset (type 2)
        self.frame_num = 0

    def next(self, s: Slice) -> int:
        if s.poc_type == 0:
            half = s.max_poc_lsb // 2
            msb = 0
            if not s.idr:
                msb = self.msb
                if s.poc_lsb < self.lsb and self.lsb - s.poc_lsb >= half:
                    msb += s.max_poc_lsb
                elif s.poc_lsb > self.lsb and s.poc_lsb - self.lsb > half:
                    msb -= s.max_poc_lsb
            if s.ref:
                self.msb, self.lsb = msb, s.poc_lsb
            top = msb + s.poc_lsb
            return min(top, top + s.poc_bottom)
        if s.poc_type == 2:
            if s.idr:
                self.offset = 0
            elif self.frame_num > s.frame_num:
                self.offset += s.max_frame_num
            self.frame_num = s.frame_num
            return 0 if s.idr else 2 * (self.offset + s.frame_num) - (0 if s.ref else 1)
        raise Unsupported("picture order count type 1")


def _b_lists(s: Slice, pic_nums: dict[int, int], pocs: dict[int, int], position: int, max_frame_num: int) -> set[int]:
    """The pictures a B slice's two lists hold (8.2.4.2.3 default order by picture order count, modification,
    truncated); the co-located picture of direct prediction is the first of list 1, so it is among them."""
    current_poc = pocs[position]
    before = sorted((h for h in pic_nums if pocs[h] < current_poc), key=pocs.__getitem__, reverse=True)
    after = sorted((h for h in pic_nums if pocs[h] > current_poc), key=pocs.__getitem__)
    if len(before) + len(after) != len(pic_nums):
        raise Unsupported("a reference picture with the current picture order count")
    list0, list1 = before + after, after + before
    variants = [list1]
    if len(list1) > 1 and list1 == list0:
        # List 1 then starts with its first two entries switched. Whether "identical" compares the whole lists or
        # the lists cut to their lengths (as FFmpeg does) is left open: both are counted.
        variants.append([list1[1], list1[0], *list1[2:]])
    refers = set(_modified(list0, s.modification[0], s.num_ref_idx[0], pic_nums, s.frame_num, max_frame_num))
    for entries in variants:
        refers.update(_modified(entries, s.modification[1], s.num_ref_idx[1], pic_nums, s.frame_num, max_frame_num))
    return refers


def _modified(
    entries: list[int],
    commands: list[tuple[int, int]],
    length: int,
    pic_nums: dict[int, int],
    current: int,
    max_frame_num: int,
) -> list[int]:
    """A reference list after its modification commands (8.2.4.3.1), cut to its length."""
    predicted = current
    for index, (idc, value) in enumerate(commands):
        if idc == 2:
            raise Unsupported("long-term reference in a list")
        no_wrap = predicted - (value + 1) if idc == 0 else predicted + (value + 1)
        if no_wrap < 0:
            no_wrap += max_frame_num
        elif no_wrap >= max_frame_num:
            no_wrap -= max_frame_num
        predicted = no_wrap
        number = no_wrap - max_frame_num if no_wrap > current else no_wrap
        matches = [h for h, n in pic_nums.items() if n == number]
        if not matches:
            raise Unsupported("list names a picture not held")
        entries = entries[:index] + matches[:1] + [e for e in entries[index:] if e != matches[0]]
    return entries[:length]
