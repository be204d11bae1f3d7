"""Hand-made raw frames with known values, for the foundation's unit tests.

The simulator makes realistic nights; these frames are deliberately simple so
that every expected number can be computed by hand.
"""

import numpy as np
from astropy.io import fits

SHAPES = {"VIS": (4096, 908), "NIR": (2048, 2048), "ACQ": (1024, 1024)}

KINDS = {
    # name: (catg, type, tech, arm, extra header)
    "bias_vis": ("CALIB", "BIAS", "IMAGE", "VIS", {}),
    "bias_acq": ("CALIB", "BIAS", "IMAGE", "ACQ", {}),
    "dark_nir": ("CALIB", "DARK", "IMAGE", "NIR", {}),
    "dark_acq": ("CALIB", "DARK", "IMAGE", "ACQ", {}),
    "dark_vis": ("CALIB", "DARK", "IMAGE", "VIS", {}),
    "pinhole_arc_vis": ("CALIB", "LAMP,WAVE", "ECHELLE,PINHOLE", "VIS", {"HIERARCH ESO INS THAR NAME": "ThAr"}),
    "pinhole_arc_nir": ("CALIB", "LAMP,WAVE", "ECHELLE,PINHOLE", "NIR", {"HIERARCH ESO INS ARGO NAME": "Ar"}),
    "pinhole_arc_nir_off": ("CALIB", "LAMP,WAVE", "ECHELLE,PINHOLE", "NIR", {}),
    "pinhole_flat_vis": ("CALIB", "LAMP,ORDERDEF", "ECHELLE,PINHOLE", "VIS", {"HIERARCH ESO INS QTH NAME": "QTH"}),
    "slit_flat_vis_q": ("CALIB", "LAMP,QFLAT", "ECHELLE,SLIT", "VIS", {"HIERARCH ESO INS QTH NAME": "QTH"}),
    "slit_flat_vis_d": ("CALIB", "LAMP,DFLAT", "ECHELLE,SLIT", "VIS", {"HIERARCH ESO INS DEUT NAME": "D2"}),
    "slit_flat_nir": ("CALIB", "LAMP,FLAT", "ECHELLE,SLIT", "NIR", {"HIERARCH ESO INS QTH NAME": "QTH"}),
    "slit_flat_nir_off": ("CALIB", "LAMP,FLAT", "ECHELLE,SLIT", "NIR", {}),
    "multipinhole_arc_vis": ("CALIB", "LAMP,WAVE", "ECHELLE,MULTI-PINHOLE", "VIS", {"HIERARCH ESO INS THAR NAME": "ThAr"}),
    "std_flux_vis": ("CALIB", "STD,FLUX", "ECHELLE,SLIT,STARE", "VIS", {}),
    "std_telluric_nir": ("CALIB", "STD,TELLURIC", "ECHELLE,SLIT,NODDING", "NIR", {}),
    "science_nod_nir": ("SCIENCE", "OBJECT", "ECHELLE,SLIT,NODDING", "NIR", {}),
    "science_offset_vis": ("SCIENCE", "OBJECT,ASYNC", "ECHELLE,SLIT,OFFSET", "VIS", {}),
    "imaging_flat_acq": ("CALIB", "FLAT,SKY", "IMAGE", "ACQ", {"HIERARCH ESO INS ACFW ID": "r"}),
    "imaging_science_acq": ("SCIENCE", "OBJECT", "IMAGE", "ACQ", {"HIERARCH ESO INS ACFW ID": "g"}),
}


def raw_header(arm, catg="CALIB", dpr_type="BIAS", tech="IMAGE", *, binning=(1, 1), exptime=0.0,
               mjd=60695.1, extra=None, conad=None, gain=None, ron=None):
    """A minimal raw header following the contract."""
    h = fits.Header()
    h["INSTRUME"] = "SOXS"
    h["TELESCOP"] = "ESO-NTT"
    h["HIERARCH ESO SEQ ARM"] = arm
    h["HIERARCH ESO DPR CATG"] = catg
    h["HIERARCH ESO DPR TYPE"] = dpr_type
    h["HIERARCH ESO DPR TECH"] = tech
    h["MJD-OBS"] = mjd
    h["DATE-OBS"] = "2025-01-20T02:24:00.000"
    h["EXPTIME"] = exptime
    h["HIERARCH ESO DET BINX"] = binning[0]
    h["HIERARCH ESO DET BINY"] = binning[1]
    if arm == "VIS":
        h["HIERARCH ESO DET READ CURID"] = 1
    if conad is not None:
        h["HIERARCH ESO DET OUT1 CONAD"] = conad
    if gain is not None:
        h["HIERARCH ESO DET OUT1 GAIN"] = gain
    if ron is not None:
        h["HIERARCH ESO DET OUT1 RON"] = ron
    for k, v in (extra or {}).items():
        h[k] = v
    return h


def kind_header(name, **kwargs):
    """The header of one of the frame kinds in :data:`KINDS`."""
    catg, dpr_type, tech, arm, extra = KINDS[name]
    return raw_header(arm, catg, dpr_type, tech, extra={**extra, **kwargs.pop("extra", {})}, **kwargs)


def write_frame(path, header, data=None, *, fill=1000):
    """Write a raw frame (uint16 for VIS/ACQ, float32 for NIR) and return its path."""
    arm = header.get("HIERARCH ESO SEQ ARM", "ACQ")
    if data is None:
        ny, nx = SHAPES[arm]
        bx, by = header.get("HIERARCH ESO DET BINX", 1), header.get("HIERARCH ESO DET BINY", 1)
        data = np.full((ny // by, nx // bx), fill, dtype=np.float32 if arm == "NIR" else np.uint16)
    # astropy stores uint16 as BITPIX 16 with BZERO 32768, as the contract says
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return path


def lzw_compress(data):
    """Unix ``compress`` (.Z) encoding of ``data`` bytes: LZW, 9-16 bit codes, block mode."""
    out = bytearray(b"\x1f\x9d\x90")
    table = {bytes([i]): i for i in range(256)}
    next_code, bits, buf, nbits = 257, 9, 0, 0
    codes_in_group = 0

    def emit(code):
        nonlocal buf, nbits, codes_in_group
        buf |= code << nbits
        nbits += bits
        while nbits >= 8:
            out.append(buf & 0xFF)
            buf >>= 8
            nbits -= 8
        codes_in_group += 1

    w = b""
    for byte in data:
        wc = w + bytes([byte])
        if wc in table:
            w = wc
            continue
        emit(table[w])
        if next_code < (1 << 16):
            table[wc] = next_code
            next_code += 1
            if next_code > (1 << bits) and bits < 16:
                # compress pads the current group of 8 codes before widening
                while codes_in_group % 8:
                    emit(0)
                bits += 1
                codes_in_group = 0
        w = bytes([byte])
    if w:
        emit(table[w])
    if nbits:
        out.append(buf & 0xFF)
    return bytes(out)
