"""ImageService: pulling, listing and removing images."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, AsyncIterator

from cri.proto import api_pb2 as pb
from cri.servicers.node import Node
from runtime.errors import InvalidArgument

if TYPE_CHECKING:
    from images.image_store import ImageRecord

STREAM_CHUNK = 100


def _uid_and_name(user: str) -> tuple[int | None, str]:
    """kubelet's runAsNonRoot check needs the uid when the image gives a
    number, else the user name."""
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name


def to_pb(rec: "ImageRecord", pinned: bool = False) -> pb.Image:
    uid, username = _uid_and_name(rec.user)
    img = pb.Image(id=rec.id, repo_tags=rec.repo_tags, repo_digests=rec.repo_digests, size=rec.size,
                   username=username, spec=pb.ImageSpec(image=rec.id), pinned=pinned or rec.pinned)
    if uid is not None:
        img.uid.value = uid
    return img


class ImageServicer:
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon

    async def _filtered(self, request: Any) -> list["ImageRecord"]:
        images = self.daemon.images
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            rec = await images.find(wanted)
            return [rec] if rec is not None else []
        return images.list()

    async def ListImages(self, request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        records = await self._filtered(request)
        return pb.ListImagesResponse(images=[to_pb(r, self.daemon.images.is_pinned(r)) for r in records])

    async def StreamImages(self, request: pb.StreamImagesRequest,
                           context: Any) -> AsyncIterator[pb.StreamImagesResponse]:
        records = await self._filtered(request)
        for i in range(0, len(records), STREAM_CHUNK):
            chunk = records[i:i + STREAM_CHUNK]
            yield pb.StreamImagesResponse(images=[to_pb(r, self.daemon.images.is_pinned(r)) for r in chunk])

    async def ImageStatus(self, request: pb.ImageStatusRequest, context: Any) -> pb.ImageStatusResponse:
        if not request.image.image:
            raise InvalidArgument("ImageStatus needs image.image (a reference or image ID)")
        images = self.daemon.images
        rec = await images.find(request.image.image)
        if rec is None:
            return pb.ImageStatusResponse()  # CRI: absent image is an empty answer, not an error
        info = {}
        if request.verbose:
            info["info"] = json.dumps({
                "id": rec.id, "chainIDs": rec.chain_ids, "diffIDs": rec.diff_ids, "size": rec.size,
                "layerDirs": images.layer_dirs(rec), "imageSpec": images.full_config(rec),
            }, sort_keys=True)
        return pb.ImageStatusResponse(image=to_pb(rec, images.is_pinned(rec)), info=info)

    async def PullImage(self, request: pb.PullImageRequest, context: Any) -> pb.PullImageResponse:
        if not request.image.image:
            raise InvalidArgument("PullImage needs image.image (e.g. docker.io/library/busybox:latest)")
        auth = request.auth if request.HasField("auth") else None
        rec = await self.daemon.images.pull(request.image.image, auth)
        return pb.PullImageResponse(image_ref=rec.id)

    async def RemoveImage(self, request: pb.RemoveImageRequest, context: Any) -> pb.RemoveImageResponse:
        if not request.image.image:
            raise InvalidArgument("RemoveImage needs image.image (a reference or image ID)")
        await self.daemon.images.remove(request.image.image)
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: Any) -> pb.ImageFsInfoResponse:
        u = await self.daemon.images.fs_usage()
        fs = pb.FilesystemUsage(timestamp=u.timestamp_ns, fs_id=pb.FilesystemIdentifier(mountpoint=u.mountpoint),
                                used_bytes=pb.UInt64Value(value=u.used_bytes),
                                inodes_used=pb.UInt64Value(value=u.inodes_used))
        return pb.ImageFsInfoResponse(image_filesystems=[fs])
