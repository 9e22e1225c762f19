"""The Uploads API end to end: the OpenAI SDK's chunked upload -> shim -> a file id the real engine answers about."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.test_openai_chat import SMALL, VIDEO_TOKENS, ask, data_url, video_part
from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))


def test_sdk_upload_file_chunked_gives_a_file_id_chat_answers_about_as_about_its_bytes(shim, clip) -> None:
    client = shim.client()
    done = client.uploads.upload_file_chunked(file=clip, filename="clip.mp4", bytes=len(clip), mime_type="video/mp4",
                                              purpose="vision", part_size=len(clip) // 4 + 1)  # four parts
    assert done.object == "upload" and done.status == "completed" and done.id.startswith("upload_")
    assert done.file is not None and done.file.bytes == len(clip) and done.file.filename == "clip.mp4"
    assert client.files.content(done.file.id).read() == clip

    by_id = client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(done.file.id)),
                                           max_tokens=6, temperature=0, extra_body=SMALL)
    inline = client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(data_url(clip))),
                                            max_tokens=6, temperature=0, extra_body=SMALL)
    assert by_id.usage.prompt_tokens_details.video_tokens == VIDEO_TOKENS
    assert by_id.choices[0].message.content == inline.choices[0].message.content
    assert by_id.usage.prompt_tokens == inline.usage.prompt_tokens
    assert client.files.delete(done.file.id).deleted is True


def test_sdk_uploads_answer_400_naming_the_problem_when_a_part_passes_the_declared_bytes(shim, clip) -> None:
    client = shim.client()
    upload = client.uploads.create(bytes=100, filename="clip.mp4", mime_type="video/mp4", purpose="vision")
    assert upload.status == "pending" and upload.expires_at == upload.created_at + 3600
    with pytest.raises(openai.BadRequestError) as over:
        client.uploads.parts.create(upload_id=upload.id, data=clip[:101])
    assert over.value.body["param"] == "data" and "100" in over.value.body["message"]
    part = client.uploads.parts.create(upload_id=upload.id, data=clip[:60])
    with pytest.raises(openai.BadRequestError) as short:
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])
    assert short.value.body["param"] == "bytes"
    assert client.uploads.cancel(upload.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as cancelled:
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id])
    assert cancelled.value.body["code"] == "upload_cancelled"
