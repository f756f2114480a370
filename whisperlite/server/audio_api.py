"""The audio faces: whisper.cpp server's `POST /inference` and `POST /load`, and OpenAI's
`POST /v1/audio/transcriptions` and `/v1/audio/translations` (JSON, text, SRT, VTT,
verbose_json, and SSE with `stream=true`).

A request's upload goes to a temporary file of its own (ffmpeg must seek in some containers,
an MP4 with its index at the end); the file is removed as soon as ffmpeg has opened it (the
transcription's first step), or when the request ends before that. The upload's name is only
ever shown in messages. Transcription runs on the engine thread: its first step opens the
audio, each next step gives one segment (at most one window of decoding).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from whisperlite.core.errors import AudioDecodeError, WhisperliteError
from whisperlite.output.writers import WORD_FORMATS, WRITERS
from whisperlite.server.engine import JobStream
from whisperlite.server.errors import ApiError
from whisperlite.server.fields import parse_bool, run_options_of
from whisperlite.server.jobs import ClientGone, guarded, timed_out
from whisperlite.server.state import ServerState, state_of
from whisperlite.transcription.options import OptionError, RunOptions
from whisperlite.transcription.results import Segment, TranscriptionInfo

# openai/whisper tokenizer.py LANGUAGES: OpenAI's verbose_json and whisper.cpp name the language
LANGUAGE_NAMES = dict(pair.split(":") for pair in (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese "
    "tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi "
    "fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish "
    "hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin "
    "mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian "
    "az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
    "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi "
    "pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian "
    "be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese "
    "ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar "
    "bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir "
    "jw:javanese su:sundanese yue:cantonese").split())

OPENAI_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
CPP_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_OUTPUTS = ("srt", "vtt", "txt", "json")  # what `outputs` may ask for with stream=true
OPENAI_WHISPER = "whisper-1"
# fields each face reads itself; every other field goes through the flag table
_OPENAI_OWN = frozenset({"file", "model", "response_format", "timestamp_granularities[]", "timestamp_granularities",
                         "stream", "outputs"})
_CPP_OWN = frozenset({"file", "response_format", "detect_language", "no_language_probabilities"})
_MEDIA = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain; charset=utf-8",
          "srt": "text/plain; charset=utf-8", "vtt": "text/plain; charset=utf-8"}
_CPP_MEDIA = {"text": "text/html; charset=utf-8", "srt": "application/x-subrip", "vtt": "text/vtt"}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


# ---------------------------------------------------------------- the request's form and file

async def _form(request: Request) -> tuple[UploadFile | None, dict[str, str], list[str]]:
    """(the `file` upload, the text fields, the timestamp granularities); 400 for a form that
    is not one."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(400, "expected a multipart/form-data body with the audio in its 'file' field",
                       code="invalid_request")
    try:
        form = await request.form(max_files=2, max_fields=200)
    except HTTPException as e:
        raise ApiError(400, f"malformed form: {e.detail}", code="invalid_request") from None
    upload, fields, granularities = None, {}, []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "file" or upload is not None:
                raise ApiError(400, f"{key}: only one file, in the 'file' field, is taken", param=key,
                               code="invalid_request")
            upload = value
        elif key in ("timestamp_granularities[]", "timestamp_granularities"):
            granularities.append(value)
        elif key in fields:
            raise ApiError(400, f"{key}: given twice", param=key, code="invalid_value")
        else:
            fields[key] = value
    return upload, fields, granularities


def _upload_name(upload: UploadFile) -> str:
    """The upload as messages name it (never a path on this machine)."""
    name = (upload.filename or "").replace("\n", " ").replace("\r", " ").strip()
    return name[:120] or "file"


async def _save(upload: UploadFile) -> str:
    """The upload in a temporary file of its own; the caller removes it."""
    fd, path = tempfile.mkstemp(prefix="whisperlite-upload-")

    def copy() -> None:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)

    try:
        await asyncio.to_thread(copy)
    except BaseException:
        _remove(path)
        raise
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _model(state: ServerState):
    if not state.ready or state.whisper is None:
        raise ApiError(503, state.failure or "the model is loading; retry later", code="model_loading",
                       headers={"Retry-After": "5"})
    return state.whisper


# ---------------------------------------------------------------- running the transcription

def _work(model: Any, path: str, run: RunOptions) -> Iterator[TranscriptionInfo | Segment]:
    """On the engine thread: the info (the audio opened, the language known), then one segment a step."""
    segments, info = model.transcribe(path, run.transcribe)
    yield info
    yield from segments


def _api_error(e: BaseException, path: str, name: str) -> ApiError:
    """A failure of the work as the client sees it: the CLI's one line, the upload's name for the path."""
    if isinstance(e, ApiError):
        return e
    message = str(e).replace(path, name)
    if isinstance(e, AudioDecodeError):
        return ApiError(415, message, param="file", code="unsupported_audio")
    from whisperlite.transcription.transcribe import LanguageError

    if isinstance(e, (OptionError, LanguageError)):
        return ApiError(400, message, code="invalid_value")
    if isinstance(e, WhisperliteError):
        return ApiError(500, message, code="transcription_failed")
    return ApiError(500, f"internal error: {type(e).__name__}: {message}", code="internal_error")


class _Transcription:
    """One admitted transcription: its info once the audio is open, then its segments."""

    def __init__(self, request: Request, state: ServerState, upload: UploadFile, run: RunOptions):
        self.request, self.state, self.run = request, state, run
        self.model = _model(state)  # the one loaded now, even if /load replaces it meanwhile
        self.upload_name = _upload_name(upload)
        self.timeout = state.config.timeout
        self.path = ""
        self.stream: JobStream[Any] | None = None
        self.deadline = 0.0

    async def start(self, upload: UploadFile) -> TranscriptionInfo:
        """Save the upload, admit the job and wait for its first step (503 when the queue is full)."""
        self.path = await _save(upload)
        try:
            self.deadline = asyncio.get_running_loop().time() + self.timeout
            self.stream = self.state.engine.submit(_work(self.model, self.path, self.run))
            return await self.next()
        except BaseException:
            self.close()
            raise
        finally:
            _remove(self.path)  # ffmpeg has it open by now, or never will

    async def next(self) -> Any:
        """The job's next step's result; StopAsyncIteration at its end."""
        assert self.stream is not None
        try:
            return await guarded(self.request, self.stream.__anext__(), self.deadline, self.timeout)
        except (StopAsyncIteration, ClientGone):
            raise
        except BaseException as e:
            raise _api_error(e, self.path, self.upload_name) from None

    async def segments(self) -> list[Segment]:
        out = []
        try:
            while True:
                out.append(await self.next())
        except StopAsyncIteration:
            return out
        finally:
            self.close()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.cancel()


def _full_text(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments).strip()


# ---------------------------------------------------------------- OpenAI's face

def _check_model(state: ServerState, fields: dict[str, str]) -> None:
    model = fields.get("model")
    loaded = state.whisper.name if state.whisper is not None else state.config.model
    if model is not None and model not in (OPENAI_WHISPER, loaded, state.config.model):
        raise ApiError(404, f"The model `{model}` does not exist (this server transcribes with `{OPENAI_WHISPER}`, "
                            f"that is {loaded})", param="model", code="model_not_found")


def _openai_segment(s: Segment) -> dict:
    return {"id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text, "tokens": s.tokens,
            "temperature": s.temperature, "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
            "no_speech_prob": s.no_speech_prob, **({"speaker": s.speaker} if s.speaker else {})}


def _openai_body(fmt: str, segments: list[Segment], info: TranscriptionInfo, run: RunOptions, words: bool) -> Response:
    text = _full_text(segments)
    duration = info.duration or 0.0
    usage = {"type": "duration", "seconds": duration}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    if fmt == "text":
        return PlainTextResponse(text + "\n", media_type=_MEDIA[fmt])
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(WRITERS[fmt](segments, info, run.output), media_type=_MEDIA[fmt])
    body: dict[str, Any] = {"task": run.transcribe.decode.task, "language": language_name(info.language),
                            "duration": duration, "text": text,
                            "segments": [_openai_segment(s) for s in segments]}
    if words:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end,
                          **({"speaker": w.speaker} if w.speaker else {})}
                         for s in segments for w in s.words or []]
    body["usage"] = usage
    return JSONResponse(body)


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def _event_stream(job: _Transcription, info: TranscriptionInfo, outputs: tuple[str, ...]) -> StreamingResponse:
    """OpenAI's transcript events: a `transcript.text.delta` per segment (with the segment's
    times, for pages that show them), then `transcript.text.done` (with the duration, the
    language and, when asked, the files the CLI would write)."""

    async def events():
        segments: list[Segment] = []
        try:
            while True:
                try:
                    seg = await job.next()
                except StopAsyncIteration:
                    break
                delta = seg.text.lstrip() if not segments else seg.text
                segments.append(seg)
                yield _sse({"type": "transcript.text.delta", "delta": delta,
                            "segment": {"id": seg.id, "start": seg.start, "end": seg.end, "text": seg.text.strip()}})
            done: dict[str, Any] = {"type": "transcript.text.done", "text": _full_text(segments),
                                    "duration": info.duration, "language": language_name(info.language)}
            if outputs:
                done["outputs"] = {fmt: WRITERS[fmt](segments, info, job.run.output) for fmt in outputs}
            yield _sse(done)
        except ClientGone:
            return
        except ApiError as e:
            yield _sse({"type": "error", "error": json.loads(e.response().body)["error"]})
        finally:
            job.close()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _openai(request: Request, task: str) -> Response:
    state = state_of(request)
    upload, fields, granularities = await _form(request)
    if upload is None:
        raise ApiError(400, "no 'file' field in the request", param="file", code="invalid_request")
    _check_model(state, fields)
    fmt = fields.get("response_format", "json")
    if fmt not in OPENAI_FORMATS:
        raise ApiError(400, f"response_format: '{fmt}' is not one of {', '.join(OPENAI_FORMATS)}",
                       param="response_format", code="invalid_value")
    for g in granularities:
        if g not in ("word", "segment"):
            raise ApiError(400, f"timestamp_granularities[]: '{g}' is not word or segment",
                           param="timestamp_granularities[]", code="invalid_value")
    words = "word" in granularities
    if words and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities[]: word times need response_format=verbose_json",
                       param="timestamp_granularities[]", code="invalid_value")
    stream = parse_bool("stream", fields.get("stream", "false"))
    outputs = tuple(o.strip() for o in fields.get("outputs", "").split(",") if o.strip())
    for o in outputs:
        if o not in STREAM_OUTPUTS:
            raise ApiError(400, f"outputs: '{o}' is not one of {', '.join(STREAM_OUTPUTS)}", param="outputs",
                           code="invalid_value")
    if outputs and not stream:
        raise ApiError(400, "outputs: only with stream=true", param="outputs", code="invalid_value")
    fields = dict(fields)
    if task == "translate":
        if "translate" in fields:
            raise ApiError(400, "translate: the translations route always translates", param="translate",
                           code="invalid_value")
        fields["translate"] = "true"
    formats = outputs if stream else (("srt",) if fmt == "srt" else ("vtt",) if fmt == "vtt" else ())
    run = run_options_of(fields, _OPENAI_OWN, formats, WORD_FORMATS, words=words)
    job = _Transcription(request, state, upload, run)
    try:
        info = await job.start(upload)
        if stream:
            return _event_stream(job, info, outputs)
        segments = await job.segments()
    except ClientGone:
        return Response(status_code=499)
    return _openai_body(fmt, segments, info, run, words)


async def transcriptions(request: Request) -> Response:
    return await _openai(request, "transcribe")


async def translations(request: Request) -> Response:
    return await _openai(request, "translate")


# ---------------------------------------------------------------- whisper.cpp's face

def _cpp_text(segments: list[Segment]) -> str:
    """whisper.cpp server's text: each segment's text (with its leading space) on a line."""
    return "".join(s.text + "\n" for s in segments)


def _cpp_verbose(segments: list[Segment], info: TranscriptionInfo, run: RunOptions, probabilities: bool,
                 eot: int) -> dict:
    body: dict[str, Any] = {"task": run.transcribe.decode.task, "language": language_name(info.language),
                            "duration": info.duration or 0.0, "text": _cpp_text(segments), "segments": []}
    if probabilities:
        ranked = info.all_language_probs or [(info.language, info.language_probability)]
        body["detected_language"] = language_name(info.language)
        body["detected_language_probability"] = info.language_probability
        body["language_probabilities"] = {code: p for code, p in ranked if p > 0.001}
    timestamps = not run.transcribe.decode.without_timestamps
    for s in segments:
        seg: dict[str, Any] = {"id": s.id, "text": s.text}
        if timestamps:
            seg["start"], seg["end"] = s.start, s.end
        seg["tokens"] = [t for t in s.tokens if t < eot]  # text tokens only, as whisper.cpp lists them
        if s.words is not None:
            seg["words"] = [{"word": w.word, **({"start": w.start, "end": w.end} if timestamps else {}),
                             "probability": w.probability, **({"speaker": w.speaker} if w.speaker else {})}
                            for w in s.words]
        if s.speaker:
            seg["speaker"] = s.speaker
        seg.update(temperature=s.temperature, avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob)
        body["segments"].append(seg)
    return body


async def inference(request: Request) -> Response:
    state = state_of(request)
    upload, fields, granularities = await _form(request)
    if granularities:
        raise ApiError(400, "timestamp_granularities[]: an OpenAI field (use /v1/audio/transcriptions)",
                       param="timestamp_granularities[]", code="unknown_field")
    if upload is None:
        raise ApiError(400, "no 'file' field in the request", param="file", code="invalid_request")
    fmt = fields.get("response_format", "json")
    if fmt not in CPP_FORMATS:
        raise ApiError(400, f"response_format: '{fmt}' is not one of {', '.join(CPP_FORMATS)}",
                       param="response_format", code="invalid_value")
    fields = dict(fields)
    if parse_bool("detect_language", fields.get("detect_language", "false")):
        fields.setdefault("language", "auto")
    probabilities = not parse_bool("no_language_probabilities", fields.get("no_language_probabilities", "false"))
    # whisper.cpp: token times by default exactly for verbose_json and line-length limits
    formats = {"srt": ("srt",), "vtt": ("vtt",), "verbose_json": ("json",)}.get(fmt, ())
    # whisper.cpp's server reads `diarize` as its stereo -di; voice diarization here is `speakers=N`
    if "diarize" in fields:
        if "stereo_diarize" in fields:
            raise ApiError(400, "diarize: given twice (also as stereo_diarize)", param="diarize", code="invalid_value")
        fields["stereo_diarize"] = fields.pop("diarize")
    run = run_options_of(fields, _CPP_OWN, formats, WORD_FORMATS)
    job = _Transcription(request, state, upload, run)
    try:
        info = await job.start(upload)
        segments = await job.segments()
    except ClientGone:
        return Response(status_code=499)
    if fmt == "json":
        return JSONResponse({"text": _cpp_text(segments)})
    if fmt == "text":
        return PlainTextResponse(_cpp_text(segments), media_type=_CPP_MEDIA[fmt])
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(WRITERS[fmt](segments, info, run.output), media_type=_CPP_MEDIA[fmt])
    return JSONResponse(_cpp_verbose(segments, info, run, probabilities, job.model.tokenizer.eot))


async def load(request: Request) -> Response:
    """whisper.cpp's /load: another Whisper model (a name or a path, as -m takes) replaces the
    loaded one; requests already running finish on the one they started with."""
    state = state_of(request)
    _, fields, _ = await _form(request)
    name = fields.get("model")
    if not name:
        raise ApiError(400, "no 'model' field in the request", param="model", code="invalid_request")
    unknown = sorted(set(fields) - {"model"})
    if unknown:
        raise ApiError(400, f"unknown field '{unknown[0]}'", param=unknown[0], code="unknown_field")
    from whisperlite.transcription.transcribe import WhisperModel

    try:
        state.whisper = await state.engine.call(WhisperModel, name, "cpu", "default", state.config.threads or 0)
    except WhisperliteError as e:
        raise ApiError(400, str(e), param="model", code="model_not_found") from None
    return PlainTextResponse("Load was successful!", media_type="application/text")


def routes() -> list[BaseRoute]:
    return [Route("/inference", inference, methods=["POST"]), Route("/load", load, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", translations, methods=["POST"])]
