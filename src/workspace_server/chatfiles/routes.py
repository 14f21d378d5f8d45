"""`POST /workspaces/:id/chat/uploads` and `GET /workspaces/:id/chat/download` (WorkspaceAuth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from workspace_server.auth.deps import Ctx, WorkspaceAuth
from workspace_server.chatfiles import service
from workspace_server.chatfiles.fs import FileNotFound, NotRegularFile
from workspace_server.common.errors import ApiError
from workspace_server.common.ids import parse_uuid
from workspace_server.openapi import body_schema, obj, query_params

router = APIRouter()

TOTAL_MESSAGE = f"upload exceeds total limit ({service.MAX_TOTAL_BYTES // (1024 * 1024)} MB)"
MAX_PARTS = 1000


def _workspace_id(raw: str) -> str:
    ws_id = parse_uuid(raw)
    if ws_id is None:
        raise ApiError(400, "invalid workspace ID")
    return ws_id


class _TotalTooLarge(MultiPartException):
    """A parser error, so Starlette closes the parts spooled so far before it re-raises."""

    def __init__(self) -> None:
        super().__init__(TOTAL_MESSAGE)


def _capped(receive: Receive, cap: int) -> Receive:
    """Count the body as it streams in, so a chunked upload cannot grow past the cap either."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise _TotalTooLarge
        return message

    return wrapped


async def _read_uploads(request: Request) -> list[service.Upload]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > service.MAX_TOTAL_BYTES:
        raise ApiError(413, TOTAL_MESSAGE)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(400, "failed to parse multipart form")
    capped = Request(request.scope, _capped(request.receive, service.MAX_TOTAL_BYTES))
    try:
        form = await capped.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
    except StarletteHTTPException as exc:
        if exc.status_code == 413:  # the server-wide body cap
            raise
        if exc.detail == TOTAL_MESSAGE:
            raise ApiError(413, TOTAL_MESSAGE) from None
        raise ApiError(400, "failed to parse multipart form") from None
    try:
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise ApiError(400, "expected at least one 'files' field")
        uploads = []
        for f in files:
            # the total cap already bounds this read; the per-file cap is checked by the service
            data = await f.read(service.MAX_FILE_BYTES + 1)
            uploads.append(service.Upload(f.filename or "", f.content_type or "", data))
        return uploads
    finally:
        await form.close()


@router.post(
    "/workspaces/{id}/chat/uploads",
    openapi_extra=body_schema(
        obj("files", files={"type": "array", "items": {"type": "string", "format": "binary"}}),
        media_type="multipart/form-data",
        description="One or more `files` parts.",
    ),
)
async def upload_chat_files(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> JSONResponse:
    ws_id = _workspace_id(id)
    uploads = await _read_uploads(request)
    return JSONResponse({"files": await service.upload(ctx, ws_id, uploads)})


@router.get(
    "/workspaces/{id}/chat/download", openapi_extra=query_params(path="A file under the chat uploads dir")
)
async def download_chat_file(id: str, request: Request, _: WorkspaceAuth, ctx: Ctx) -> StreamingResponse:
    ws_id = _workspace_id(id)
    path = request.query_params.get("path", "")
    service.check_download_path(path)
    fs = await service.workspace_fs(ctx, ws_id)
    try:
        stream = await fs.open_file(path)
    except FileNotFound:
        raise ApiError(404, "file not found") from None
    except NotRegularFile:
        raise ApiError(400, "path is not a regular file") from None
    name = service.go_base(path)
    headers = {
        # Go writes the header's UTF-8 bytes as they are; Starlette encodes header text as latin-1
        "Content-Disposition": service.content_disposition(name).encode().decode("latin-1"),
        "Content-Length": str(stream.size),
    }
    media = service.mime_type(name) or "application/octet-stream"
    return StreamingResponse(stream.chunks, media_type=media, headers=headers)
