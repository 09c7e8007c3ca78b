"""Build torch.save-style zip checkpoints without torch, for the numpy-only tests.

The pickle is written opcode by opcode (protocol 2, as torch.save writes it), so the
tests control every global and persistent id the reader will see.
"""
import zipfile


def glob(module, name):
    """GLOBAL opcode: push the object ``module.name``."""
    return b"c" + f"{module}\n{name}\n".encode()


def text(value):
    """BINUNICODE opcode: push a str."""
    data = value.encode("utf-8")
    return b"X" + len(data).to_bytes(4, "little") + data


def integer(value):
    """BININT opcode: push a signed 32-bit int."""
    return b"J" + value.to_bytes(4, "little", signed=True)


def tup(*items):
    """MARK ... TUPLE: push a tuple of the items."""
    return b"(" + b"".join(items) + b"t"


def call(func, *args):
    """Push func, push args, REDUCE: push func(*args)."""
    return func + tup(*args) + b"R"


def storage_pid(storage_type, key, numel):
    """('storage', torch.<storage_type>, key, 'cpu', numel) followed by BINPERSID."""
    return tup(text("storage"), glob("torch", storage_type), text(key), text("cpu"), integer(numel)) + b"Q"


def tensor(storage_type, key, numel, offset, size, stride):
    """A _rebuild_tensor_v2 call exactly as torch.save emits it."""
    return call(
        glob("torch._utils", "_rebuild_tensor_v2"),
        storage_pid(storage_type, key, numel),
        integer(offset),
        tup(*map(integer, size)),
        tup(*map(integer, stride)),
        b"\x89",  # requires_grad=False
        call(glob("collections", "OrderedDict")),  # backward hooks
    )


def dict_pickle(items):
    """A whole protocol-2 pickle of {key: <pickled value bytes>}."""
    body = b"".join(text(key) + value for key, value in items.items())
    return b"\x80\x02}(" + body + b"u."


def write_torch_zip(path, data_pkl, storages, prefix="archive", byteorder="little"):
    """Write the zip layout torch.save uses: <prefix>/data.pkl + <prefix>/data/<key>."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", data_pkl)
        if byteorder is not None:
            archive.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in storages.items():
            archive.writestr(f"{prefix}/data/{key}", raw)
        archive.writestr(f"{prefix}/version", "3\n")
    return path
