"""`docker save` of this machine's engine, read as a stream for the engine source (engine_source.py): one
request for all images, its tar walked as it arrives (docker's legacy layout or the OCI one of docker
25+), each wanted blob hashed and spooled to an unlinked temp file, from which its upload reads in
place. `Presave` asks early, so the engine's export (seconds before its first byte) overlaps other work.

The request goes through public API only: the SDK's `APIClient.get_image` saves one image a call, so
the one save of several images is `GET /images/get?names=...` sent with the client's own
`requests.Session.get` (APIClient is a requests.Session) on its `base_url` and `api_version`. The
client's timeout bounds each read of the stream.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodecfg.bundle.reader import CHUNK
from nodecfg.push.api import PushError

if TYPE_CHECKING:
    import docker
    import requests


class Spool:
    """The wanted blobs of a save stream, one after another in an unlinked temp file (the page
    cache, mostly): a `BlobSource` for the uploads, read in place by `os.pread`."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="nodecfg-save-")  # noqa: SIM115 -- closed by close()
        self.path = Path(f"docker save (spooled in {tempfile.gettempdir()})")
        self._blobs: dict[str, tuple[int, int]] = {}
        self._end = 0

    def fileno(self) -> int:
        return self.file.fileno()

    def offset(self, digest: str) -> tuple[int, int]:
        try:
            return self._blobs[digest]
        except KeyError:
            raise PushError(f"blob {digest} is not in this run's docker save; run registry-up again") from None

    def sizes(self) -> dict[str, int]:
        return {d: size for d, (_, size) in self._blobs.items()}

    def add(self, read: Callable[[int], bytes], size: int, wanted: set[str]) -> str | None:
        """Spool `size` bytes from `read`, hashing them; keep them if their digest is wanted (and
        not kept yet): then return the digest. Unwanted bytes are overwritten by the next blob."""
        sha = hashlib.sha256()
        start, left = self._end, size
        self.file.seek(start)
        while left:
            data = read(min(CHUNK, left))
            if not data:
                raise PushError(f"docker save ended early ({size - left} of {size} bytes of a file)")
            sha.update(data)
            self.file.write(data)
            left -= len(data)
        self.file.flush()
        digest = "sha256:" + sha.hexdigest()
        if digest not in wanted or digest in self._blobs:
            return None
        self._blobs[digest] = (start, size)
        self._end = start + size
        return digest

    def close(self) -> None:
        self.file.close()


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks (the engine's response), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def saved_blobs(chunks: Iterator[bytes], wanted: set[str], spool: Spool) -> Iterator[tuple[str, int]]:
    """Walk a `docker save` tar stream (docker's legacy layout or the OCI one of docker 25+): every
    regular file is hashed; a wanted one is spooled and its (digest, size) yielded at once."""
    stream = io.BufferedReader(_ChunkReader(chunks), CHUNK)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or member.size == 0:
                    continue  # directories; a layer docker links to its first copy (a symlink)
                f = tar.extractfile(member)
                if f is None:
                    continue
                digest = spool.add(f.read, member.size, wanted)
                if digest is not None:
                    yield digest, member.size
    except tarfile.TarError as exc:
        raise PushError(f"docker save gave no readable tar ({exc})") from None


def save_stream(client: docker.DockerClient, image_ids: Sequence[str]) -> Iterator[bytes]:
    """One `docker save` of all these images (GET /images/get?names=...; the SDK saves one image a
    call), streamed."""
    return _stream(lambda: _open_save(client, image_ids))


def _open_save(client: docker.DockerClient, image_ids: Sequence[str]) -> requests.Response:
    """The engine's response to the save request; it answers once its export is done."""
    api = client.api
    return api.get(f"{api.base_url}/v{api.api_version}/images/get", params={"names": list(image_ids)},
                   stream=True, timeout=api.timeout)


def _stream(opened: Callable[[], requests.Response]) -> Iterator[bytes]:
    import requests

    try:
        response = opened()
        if not response.ok:
            raise PushError(f"docker save on this machine failed (HTTP {response.status_code}: "
                            f"{_engine_message(response)})")
        yield from response.iter_content(CHUNK)
    except requests.RequestException as exc:
        raise PushError(f"docker save on this machine failed ({exc})") from None


def _engine_message(response: requests.Response) -> str:
    """The engine's error: its JSON `message`, else the body's text."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text.strip() or response.reason)


class Presave:
    """A `docker save` asked early, as soon as the registry's tags show which images it lacks: the
    engine exports them (seconds, before its first byte) while the master gathers its facts and the
    registry is asked for blobs. Used if it covers the images the push needs, else closed."""

    def __init__(self, client: docker.DockerClient, image_ids: Sequence[str]) -> None:
        self.ids = tuple(dict.fromkeys(image_ids))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="presave")
        self._response: Future[requests.Response] = pool.submit(_open_save, client, self.ids)
        pool.shutdown(wait=False)

    def stream(self, image_ids: Sequence[str]) -> Iterator[bytes] | None:
        """The save's bytes when it holds every one of `image_ids`, else None."""
        if not set(image_ids) <= set(self.ids):
            return None
        return _stream(self._response.result)

    def close(self) -> None:
        def close(fut: Future[requests.Response]) -> None:
            if fut.exception() is None:
                fut.result().close()

        self._response.add_done_callback(close)
