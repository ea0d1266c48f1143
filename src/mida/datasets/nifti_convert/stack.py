"""From frames to NIfTI volumes: split, order, place and fill, the way dcm2niix does.

Conventions (each checked against dcm2niix, see ``docs/datasets-nifti.md``):

* **Splitting.** A series gives one volume per combination of Series Number
  (dcm2niix never stacks instances whose Series Numbers differ), echo, complex
  component (magnitude, phase, real, imaginary, field map in Hz) and geometry
  (matrix size, orientation, pixel spacing). Repeated positions within one
  such group make a 4D volume, ordered by Temporal Position, then acquisition
  time, then Instance Number.
* **Slice order.** Slices ascend along the normal ``row x column`` of Image
  Orientation (Patient), so the affine's third column points the same way
  whatever order the files came in.
* **Affine.** DICOM's LPS patient coordinates become NIfTI's RAS+ (x and y
  negated), and the rows are stored bottom-up (dcm2niix's row flip), so the
  second column of the affine is minus the DICOM column direction. The third
  column is the step between consecutive slice positions, which is
  ``normal x spacing`` for an ordinary stack (and keeps a gantry tilt as
  shear, uncorrected). ``qform`` and ``sform`` both hold it, code 1 (scanner).
  A 3D MR acquisition written as one 3D volume is instead reoriented to the
  axes closest to RAS+, as dcm2niix's ``nii_setOrtho`` does (see :func:`_ortho`).
* **Values.** Stored integers are written as they are, with Rescale Slope and
  Intercept as ``scl_slope`` / ``scl_inter``; unsigned 16-bit data with fewer
  than 16 bits stored become int16 (lossless). When the scaling differs
  between frames the volume is written as float32 modality values, scaling
  1 / 0. A Philips Scale Slope, when kept, gives dcm2niix's "precise" floating
  point scaling ``(PV x RS + RI) / (RS x SS)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from mida.datasets.nifti_convert.frames import attribute, number, phase_direction
from mida.datasets.nifti_convert.models import ConversionError, Frame, MemoryFile, NiftiVolume
from mida.datasets.nifti_convert.sidecar import sidecar_for

HEADER_BYTES = 352
"""A single-file NIfTI-1 header (348 bytes) plus the 4-byte extension flag."""

RGB24 = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])

_POSITION_TOLERANCE = 0.01
"""mm: frames closer than this along the normal share a slice position."""

_COMPONENT_SUFFIX = {"PHASE": "_ph", "REAL": "_real", "IMAGINARY": "_imaginary"}


def volumes_from_frames(frames: Sequence[Frame]) -> list[NiftiVolume]:
    """Split ``frames`` of one series into volumes and build each one."""
    if not frames:
        raise ConversionError("no frames to convert: the series has no image instances")
    ordered = sorted(frames, key=lambda f: (f.instance_number, f.sop_instance_uid, f.number))
    echo_ids, echo_labels = _echoes(ordered)
    geometry_ids = _geometries(ordered)
    numbers = [_series_number(f) for f in ordered]
    groups: dict[tuple[int | None, int, int, str, str | None], list[Frame]] = defaultdict(list)
    for f, number_, echo, geometry in zip(ordered, numbers, echo_ids, geometry_ids, strict=True):
        units = "Hz" if f.units == "Hz" else None
        groups[(number_, geometry, echo, f.component, units)].append(f)
    multi_series = len(set(numbers)) > 1
    multi_echo = len(echo_labels) > 1
    multi_geometry = len(set(geometry_ids)) > 1
    out: list[NiftiVolume] = []
    used: set[str] = set()
    for (series_number, _geometry, echo, component, units), members in groups.items():
        suffix = f"_s{series_number}" if multi_series else ""
        suffix += f"_e{echo_labels[echo]}" if multi_echo else ""
        suffix += "_fieldmaphz" if units == "Hz" else _COMPONENT_SUFFIX.get(component, "")
        if multi_geometry:
            suffix += f"_i{min(f.instance_number for f in members):05d}"
        if suffix in used:
            suffix += f"_{len(used) + 1}"
        used.add(suffix)
        out.append(_volume(members, suffix, echo_labels[echo] if multi_echo else None))
    return out


def _series_number(f: Frame) -> int | None:
    value = number(f.dataset.get("SeriesNumber"))
    return int(value) if value is not None else None


def _echoes(frames: Sequence[Frame]) -> tuple[list[int], list[int]]:
    """Each frame's echo group and each group's echo number.

    Echoes are told apart by Echo Number(s) and Echo Time. A group's number is
    its Echo Number when every group has a distinct one, else its rank of first
    appearance (what dcm2niix does with enhanced files, which carry only times).
    """
    keys: dict[tuple[int | None, float | None], int] = {}
    ids = []
    for f in frames:
        key = (f.echo_number or None,
               round(f.echo_time, 3) if f.echo_time is not None else None)
        ids.append(keys.setdefault(key, len(keys)))
    numbers = [k[0] for k in keys]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        labels = [int(n) for n in numbers if n is not None]
    else:
        labels = list(range(1, len(keys) + 1))
    return ids, labels


def _geometries(frames: Sequence[Frame]) -> list[int]:
    """Each frame's geometry group: same matrix, orientation and pixel spacing (1e-4)."""
    reps: list[Frame] = []
    ids = []
    for f in frames:
        for i, r in enumerate(reps):
            if _same_geometry(f, r):
                ids.append(i)
                break
        else:
            ids.append(len(reps))
            reps.append(f)
    return ids


def _same_geometry(a: Frame, b: Frame) -> bool:
    if a.pixels.shape != b.pixels.shape:
        return False
    if (a.orientation is None) != (b.orientation is None):
        return False
    if a.orientation is not None and b.orientation is not None \
            and np.max(np.abs(a.orientation - b.orientation)) > 1e-4:
        return False
    if a.pixel_spacing is None or b.pixel_spacing is None:
        return a.pixel_spacing == b.pixel_spacing
    return max(abs(x - y) for x, y in zip(a.pixel_spacing, b.pixel_spacing, strict=True)) <= 1e-4


def _time_key(f: Frame) -> tuple[float, float, int, int]:
    return (f.temporal_index if f.temporal_index is not None else -1,
            f.acquired if f.acquired is not None else -math.inf,
            f.instance_number, f.number)


def _arrange(frames: list[Frame]) -> tuple[list[list[Frame]], np.ndarray | None, float]:
    """Frames as ``[volume][slice]``, the RAS affine (None without geometry), slice spacing."""
    ref = frames[0]
    if any(f.position is None or f.orientation is None for f in frames):
        # No patient geometry (secondary capture, most US, CR without orientation):
        # stack the frames in order, as dcm2niix does, and leave qform/sform unset.
        return [frames], None, _thickness(ref) or 1.0
    assert ref.orientation is not None
    # Unit vectors, as dcm2niix makes them: some writers round the cosines coarsely.
    row = ref.orientation[:3] / np.linalg.norm(ref.orientation[:3])
    col = ref.orientation[3:] / np.linalg.norm(ref.orientation[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    dist = np.array([float(np.dot(f.position, normal)) for f in frames])  # type: ignore[arg-type]
    order = np.argsort(dist, kind="stable")
    slices: list[list[Frame]] = []
    starts: list[float] = []
    for i in order:
        if slices and dist[i] - starts[-1] <= _POSITION_TOLERANCE:
            slices[-1].append(frames[i])
        else:
            slices.append([frames[i]])
            starts.append(float(dist[i]))
    counts = {len(s) for s in slices}
    if len(counts) > 1:
        raise ConversionError(
            f"slice positions repeat unevenly: {len(slices)} positions hold between "
            f"{min(counts)} and {max(counts)} frames each, so they do not form a regular "
            f"3D or 4D grid (a missing, extra or duplicated slice?); fix or split the series")
    for s in slices:
        s.sort(key=_time_key)
    nt = counts.pop()
    grid = [[s[t] for s in slices] for t in range(nt)]
    first = grid[0]
    nz = len(first)
    if nz == 1:
        step = normal * (_thickness(ref) or 1.0)
    else:
        positions = np.array([f.position for f in first], dtype=np.float64)
        step = (positions[-1] - positions[0]) / (nz - 1)
        gaps = np.diff(np.array(starts))
        expected = positions[0] + np.outer(np.arange(nz), step)
        off_line = float(np.max(np.linalg.norm(positions - expected, axis=1)))
        tolerance = max(0.001, 0.01 * float(np.mean(gaps)))
        if float(np.max(np.abs(gaps - gaps.mean()))) > tolerance or off_line > tolerance:
            raise ConversionError(
                f"slices are not evenly spaced (gaps from {gaps.min():.4g} to "
                f"{gaps.max():.4g} mm between {nz} positions): NIfTI needs one spacing; "
                f"a slice is probably missing from the series")
    spacing = ref.pixel_spacing or (1.0, 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row * spacing[1]
    lps[:3, 1] = col * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = first[0].position
    return grid, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, float(np.linalg.norm(step))


def _flip_rows(ras: np.ndarray, rows: int) -> np.ndarray:
    """The affine once rows are stored bottom-up (dcm2niix's default row flip)."""
    out = ras.copy()
    out[:3, 3] += out[:3, 1] * (rows - 1)
    out[:3, 1] *= -1
    return out


_ORIENT_CANDIDATES = (  # dcm2niix nii_ortho.cpp getBestOrient: the 6 axis permutations
    ((0, 0), (1, 1), (2, 2)), ((0, 0), (1, 2), (2, 1)), ((0, 1), (1, 0), (2, 2)),
    ((0, 1), (1, 2), (2, 0)), ((0, 2), (1, 0), (2, 1)), ((0, 2), (1, 1), (2, 0)),
)


def _ortho(ras: np.ndarray, dims: tuple[int, int, int]) \
        -> tuple[tuple[int, int, int], tuple[bool, bool, bool], np.ndarray] | None:
    """dcm2niix's reorientation of 3D acquisitions (``nii_setOrtho``), or None if not needed.

    dcm2niix stores a 3D (non-EPI) MR volume in the axis order and direction
    closest to RAS+ instead of flipping its rows: the voxel corner nearest to
    the minimum world coordinate becomes the origin, and of the six axis
    permutations the one best aligned with the affine wins. Returns, for each
    output axis, the input axis it takes and whether it is reversed, and the
    new affine. ``ras`` is the affine of the array in DICOM row order.
    """
    r = ras[:3, :3]
    off = r - np.diag(np.diag(r))
    if np.all(np.diag(r) > 0) and not np.any(off):
        return None
    corners = []
    for i in range(8):
        flips = (-1 if i & 1 else 1, -1 if i & 2 else 1, -1 if i & 4 else 1)
        voxel = [dims[a] - 1 if flips[a] < 0 else 0 for a in range(3)]
        corners.append((flips, ras[:3, :3] @ voxel + ras[:3, 3]))
    low = np.min([c for _, c in corners], axis=0)
    flips, origin = corners[0]
    best_distance = float(np.linalg.norm(origin - low))
    for f, c in corners[1:]:
        d = float(np.linalg.norm(c - low))
        if d < best_distance:
            best_distance, flips, origin = d, f, c
    best, orient = 0.0, None
    for candidate in _ORIENT_CANDIDATES:
        m = np.zeros((3, 3))
        for (i, j), sign in zip(candidate, flips, strict=True):
            m[i, j] = sign
        score = float(np.trace(r @ m))
        if score > best:
            best, orient = score, m
    if orient is None:
        return None
    take = [0, 0, 0]
    reverse = [False, False, False]
    for i in range(3):
        for j in range(3):
            if orient[i, j]:
                take[j], reverse[j] = i, bool(orient[i, j] < 0)
    if take == [0, 1, 2] and not any(reverse):
        return None
    out = np.eye(4)
    out[:3, :3] = r @ orient
    out[:3, 3] = origin
    return (take[0], take[1], take[2]), (reverse[0], reverse[1], reverse[2]), out


def _reorients(ref: Frame, nt: int, nz: int) -> bool:
    """dcm2niix reorients 3D MR acquisitions (not EPI) written as one 3D volume."""
    if nt != 1 or nz < 2 or ref.pixels.ndim != 2:
        return False
    if str(attribute(ref, "MRAcquisitionType") or "").upper() != "3D":
        return False
    scanning = str(attribute(ref, "ScanningSequence") or "").upper()
    epi = str(attribute(ref, "EchoPlanarPulseSequence") or "").upper() == "YES"
    return not ("EP" in scanning.replace("\\", " ").split() or epi)


def _thickness(f: Frame) -> float | None:
    """The z spacing when positions cannot tell it: Spacing Between Slices, else Thickness."""
    value = number(attribute(f, "SpacingBetweenSlices")) or number(attribute(f, "SliceThickness"))
    return value if value and value > 0 else None


def _scaling(f: Frame) -> tuple[float, float]:
    """(scl_slope, scl_inter) of one frame: Rescale, or Philips precise floating point."""
    if f.philips_scale:
        # dcm2niix computes this in 32-bit floats; so do we, to write the same header.
        rs, ri, ss = np.float32(f.slope), np.float32(f.intercept), np.float32(f.philips_scale)
        l0 = ri / (rs * ss)
        l1 = (rs + ri) / (rs * ss)
        if l0 != l1:
            return float(np.float32(l1 - l0)), float(l0)
    return float(f.slope), float(f.intercept)


def _storage(frames: list[Frame]) -> tuple[np.dtype, float, float, bool]:
    """The NIfTI data type, its scaling, and whether to write scaled float32 values instead.

    Frames that disagree on scaling or data type are written as float32
    modality values with scaling 1 / 0, as dcm2niix does.
    """
    ref = frames[0]
    dtypes = {f.pixels.dtype for f in frames}
    if ref.pixels.ndim == 3:
        if dtypes != {np.dtype(np.uint8)} or ref.pixels.shape[2] != 3:
            raise ConversionError(
                f"instance {ref.sop_instance_uid}: colour images are converted only as 8-bit "
                f"RGB (NIfTI RGB24); this one has {ref.pixels.shape[2]} samples of "
                f"{ref.pixels.dtype}")
        return RGB24, 1.0, 0.0, False
    scalings = {_scaling(f) for f in frames}
    if len(scalings) == 1 and len(dtypes) == 1:
        slope, inter = scalings.pop()
        dtype = dtypes.pop()
        if dtype == np.uint16 and all(f.bits_stored < 16 for f in frames):
            dtype = np.dtype(np.int16)  # values fit: dcm2niix's default for 12-bit data
        return dtype, slope, inter, False
    return np.dtype(np.float32), 1.0, 0.0, True


def _volume(frames: list[Frame], suffix: str, echo_label: int | None) -> NiftiVolume:
    grid, ras, dz = _arrange(frames)
    ref = grid[0][0]
    nt, nz = len(grid), len(grid[0])
    rows, cols = ref.pixels.shape[:2]
    dtype, slope, inter, rescale = _storage(frames)
    spacing = ref.pixel_spacing or (1.0, 1.0)
    dims = (cols, rows, nz)
    zooms = (spacing[1], spacing[0], dz)
    reorients = _reorients(ref, nt, nz)
    ortho = _ortho(ras, dims) if ras is not None and reorients else None
    # dcm2niix reorients 3D acquisitions instead of flipping rows, even when there is no
    # patient geometry to reorient by (then the rows stay in DICOM order).
    flip_rows = not reorients
    affine: np.ndarray | None
    if ortho is not None:
        take, reverse, affine = ortho
        dims = (dims[take[0]], dims[take[1]], dims[take[2]])
        zooms = (zooms[take[0]], zooms[take[1]], zooms[take[2]])
    elif ras is not None:
        affine = _flip_rows(ras, rows) if flip_rows else ras
    else:
        affine = None
    shape = dims + ((nt,) if nt > 1 else ())
    tr = number(attribute(ref, "RepetitionTime"))
    tr_s = tr / 1000.0 if tr and tr > 0 else 0.0

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_zooms(zooms + ((tr_s,) if nt > 1 else ()))
    hdr.set_xyzt_units("mm", "sec")
    if affine is not None:
        hdr.set_qform(affine, code=1)
        hdr.set_sform(affine, code=1)
    hdr["pixdim"][4] = tr_s
    hdr.set_slope_inter(slope, inter)
    direction = phase_direction(ref)
    if direction is not None:  # dcm2niix keeps the acquisition's axes here, even reoriented
        hdr.set_dim_info(freq=0 if direction == "COL" else 1,
                         phase=1 if direction == "COL" else 0, slice=2)
    te = ref.echo_time
    hdr["descrip"] = f"TE={te:g}".encode() if te is not None else b""
    hdr["vox_offset"] = HEADER_BYTES

    buf = bytearray(HEADER_BYTES + int(np.prod(shape)) * dtype.itemsize)
    buf[:348] = hdr.binaryblock
    plane = (rows, cols, 3) if dtype == RGB24 else (rows, cols)
    store = np.uint8 if dtype == RGB24 else dtype
    if ortho is None:
        # The NIfTI array is [x=column, y=row, z, t] in Fortran order: each slice is the
        # DICOM plane, C-ordered, with its rows reversed. Fill the file buffer in place.
        vol = np.frombuffer(buf, store, offset=HEADER_BYTES).reshape(nt, nz, *plane)
        _fill(vol, grid, rescale, flip_rows=flip_rows)
    else:
        tmp = np.empty((1, nz, *plane), dtype=store)
        _fill(tmp, grid, rescale, flip_rows=False)
        take, reverse, _ = ortho
        data = tmp[0].transpose(2, 1, 0).transpose(take)  # [x, y, z] in DICOM row order
        data = data[tuple(slice(None, None, -1) if r else slice(None) for r in reverse)]
        out = np.frombuffer(buf, store, offset=HEADER_BYTES).reshape(dims, order="F")
        out[...] = data
        del out
    holder = nib.FileHolder(fileobj=MemoryFile(buf))
    image = nib.Nifti1Image.from_file_map({"header": holder, "image": holder})
    return NiftiVolume(image=image, sidecar=sidecar_for(grid, echo_label), suffix=suffix)


def _fill(vol: np.ndarray, grid: list[list[Frame]], rescale: bool, *, flip_rows: bool) -> None:
    """Copy each frame into ``vol[t, k]`` (as float32 modality values when ``rescale``)."""
    rows = slice(None, None, -1) if flip_rows else slice(None)
    for t, volume in enumerate(grid):
        for k, f in enumerate(volume):
            if rescale:
                fs, fi = _scaling(f)
                vol[t, k] = f.pixels[rows] * fs + fi
            else:
                vol[t, k] = f.pixels[rows]
