#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (corpus/<target>/) from the protocol's own examples and
the test data: one valid input of each shape a target reads, so fuzzing starts deep inside
the parsers. Re-run after a protocol change; the outputs are committed."""
import base64, hashlib, hmac, io, json, math, os, struct, sys, wave

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def astronaut():
    lines = [l for l in open(os.path.join(ROOT, "tests/data/astronaut_mediapipe_478.txt"))
             if not l.startswith("#")]
    w, h = map(int, lines[0].split())
    pts = [list(map(float, l.split())) for l in lines[1:479]]
    return w, h, pts


def binary_frame(t, w, h, pts, encoding=0, blend=()):
    out = b"PLM\x01" + struct.pack("<dHHHBB", t, w, h, len(pts), encoding, len(blend))
    for p in pts:
        out += struct.pack("<fff", *p) if encoding == 0 else struct.pack(
            "<hhh", *[max(-32768, min(32767, round(v * 16384))) for v in p])
    for i, s in blend:
        out += struct.pack("<Bf", i, s)
    return out


def wav(rate, channels, seconds, width=2):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        n = int(rate * seconds)
        frames = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) * channels
            if width == 2 else bytes([128 + int(100 * math.sin(2 * math.pi * 440 * i / rate))]) * channels
            for i in range(n))
        f.writeframes(frames)
    return buf.getvalue()


def jwt(claims, key, alg="HS256"):
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = enc(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = enc(json.dumps(claims).encode())
    if alg == "none":
        return f"{head}.{body}."
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{enc(sig)}"


def main():
    w, h, pts = astronaut()
    pts68 = pts[:68]
    # Client messages: mode byte (bit 0 landmarks endpoint, bit 1 binary) + the message.
    for i, m in enumerate([
            {"type": "hello", "protocol": 1}, {"type": "ping", "id": 7},
            {"type": "start", "media": "webm", "playback": "opus", "echo": "server"},
            {"type": "start", "media": "pcm", "sample_rate": 16000, "playback": "pcm"},
            {"type": "stop"}, {"type": "say", "text": "Hello there."},
            {"type": "playback", "utterance": 2, "played_ms": 1234.5}]):
        put("client_message", f"practice_{i}", b"\x00" + json.dumps(m).encode())
    put("client_message", "landmarks_text", b"\x01" + json.dumps(
        {"t": 1000, "width": w, "height": h, "landmarks": pts68}).encode())
    put("client_message", "landmarks_hello", b"\x01" + b'{"type":"hello","protocol":1}')
    put("client_message", "webm_chunk", b"\x02\x01" + open(
        os.path.join(ROOT, "tests/data/chromium_mediarecorder_vp8_opus.webm"), "rb").read(64))
    put("client_message", "pcm_chunk", b"\x02\x02" + b"\x00\x01" * 32)
    put("client_message", "binary_landmarks", b"\x03\x03" + binary_frame(5, w, h, pts68))

    # Landmark frames: mode byte (bit 0 binary) + the frame.
    put("landmarks", "contract_68", b"\x00" + json.dumps(
        {"t": 1000.5, "width": w, "height": h, "landmarks": pts68,
         "blendshapes": {"mouthSmileLeft": 0.4, "eyeBlinkRight": 0.1}}).encode())
    put("landmarks", "contract_478", b"\x00" + json.dumps(
        {"t": 2000, "width": w, "height": h, "landmarks": pts}).encode())
    put("landmarks", "mediapipe_shape", b"\x00" + json.dumps(
        {"t": 3000, "width": w, "height": h,
         "faceLandmarks": [[{"x": p[0], "y": p[1], "z": p[2]} for p in pts]],
         "faceBlendshapes": [{"categories": [
             {"categoryName": "mouthSmileLeft", "score": 0.5},
             {"categoryName": "jawOpen", "score": 0.2}]}]}).encode())
    put("landmarks", "no_face", b"\x00" + b'{"t":10,"width":640,"height":480,"landmarks":[]}')
    put("landmarks", "binary_float", b"\x01" + binary_frame(7, w, h, pts, 0, [(44, 0.5)]))
    put("landmarks", "binary_int16", b"\x01" + binary_frame(8, w, h, pts68, 1))

    # HTTP: mode 0 + a request head, mode 1 + a decoded path.
    for i, head in enumerate([
            "GET /api/sessions?limit=10&offset=0 HTTP/1.1\r\nHost: localhost\r\n"
            "Authorization: Bearer abc.def.ghi\r\n\r\n",
            "GET /ws/practice?session=abc&token=x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n",
            "POST /api/analyze HTTP/1.0\r\nContent-Type: audio/wav\r\nContent-Length: 44\r\n\r\n",
            "GET /index.html HTTP/1.1\r\nHost: a\r\n"]):
        put("http", f"head_{i}", b"\x00" + head.encode())
    for i, path in enumerate(["/", "/index.html", "/dir/", "/app.js", "/out/secret.txt",
                              "/s.txt", "/../outside/secret.txt", "/.secret", "/.well-known/x"]):
        put("http", f"path_{i}", b"\x01" + path.encode())

    # Bearer tokens: mode 0 + a token (signed with the fuzzer's key), mode 1..4 + claims.
    key = "fuzzing-secret-key-0123456789"
    put("jwt", "token_valid", b"\x00" + jwt({"sub": "alice", "exp": 4102444800}, key).encode())
    put("jwt", "token_expired", b"\x00" + jwt({"sub": "bob", "exp": 1000}, key).encode())
    put("jwt", "token_none", b"\x00" + jwt({"sub": "eve", "exp": 4102444800}, key, "none").encode())
    for mode in range(1, 5):
        put("jwt", f"claims_{mode}", bytes([mode]) + json.dumps(
            {"sub": "alice", "exp": 4102444800, "nbf": 1000}).encode())

    # LLM streams: 2 bytes of split seed + an SSE body.
    chunk = lambda text: "data: " + json.dumps(
        {"id": "c1", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": text}, "finish_reason": None}]}) + "\n\n"
    put("llm_stream", "reply", b"\x12\x34" + (
        ": keep-alive\n\n" + chunk("Hello") + chunk(", how are") + chunk(" you?") +
        "data: [DONE]\n\n").encode())
    put("llm_stream", "crlf_multiline", b"\x00\x07" + (
        "event: x\r\ndata: {\"choices\":[{\"delta\":\r\ndata: {\"content\":\"Hi\"}}]}\r\n\r\n"
        "data: [DONE]\r\n\r\n").encode())
    put("llm_stream", "error", b"\x00\x01" + (
        chunk("Hi") + 'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n').encode())

    # Transcription answers (verbose_json).
    put("transcription", "words", json.dumps({
        "task": "transcribe", "language": "english", "duration": 2.1, "text": " Hello world.",
        "segments": [{"id": 0, "start": 0.0, "end": 2.1, "text": " Hello world.",
                      "avg_logprob": -0.2}],
        "words": [{"word": "Hello", "start": 0.1, "end": 0.5},
                  {"word": " world.", "start": 0.6, "end": 1.2}]}))
    put("transcription", "segments_only", json.dumps({
        "text": "one two three", "segments": [
            {"start": 0, "end": 1.5, "text": "one two three", "avg_logprob": -0.5}]}))

    # Sound uploads.
    put("sound", "mono16k.wav", wav(16000, 1, 0.05))
    put("sound", "stereo8k.wav", wav(8000, 2, 0.05))
    put("sound", "u8_44k.wav", wav(44100, 1, 0.02, width=1))

    # Ingest: mode byte (bit 0 PCM, rate index) + chunking seed + the stream.
    webm = open(os.path.join(ROOT, "tests/data/chromium_mediarecorder_vp8_opus.webm"), "rb").read()
    put("ingest", "webm_head", b"\x00\x05" + webm[:24000])
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 16000)))
                   for i in range(3200))
    put("ingest", "pcm16k", b"\x03\x09" + pcm)


if __name__ == "__main__":
    sys.exit(main())
