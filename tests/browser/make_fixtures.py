#!/usr/bin/python3
"""Fake camera and microphone for Chromium: astronaut.png as a 640x480 Y4M clip and two
recorded LibriVox turns with pauses as a WAV (Chromium loops both)."""
import struct
import sys
import wave
from pathlib import Path

import numpy as np
from skimage import data

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)

# --- camera: the astronaut centred on a grey 640x480 frame, I420 (C420jpeg) -------------------
rgb = data.astronaut().astype(np.float32)  # 512x512x3
W, H = 640, 480
frame = np.full((H, W, 3), 96.0, dtype=np.float32)
crop = rgb[16:496, :, :]  # 480 rows, 512 columns
frame[:, 64:576, :] = crop
r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
y = 0.299 * r + 0.587 * g + 0.114 * b
u = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
v = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
sub = lambda c: c.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))
planes = [np.clip(p, 0, 255).astype(np.uint8).tobytes() for p in (y, sub(u), sub(v))]
with open(out / "astronaut.y4m", "wb") as f:
    f.write(f"YUV4MPEG2 W{W} H{H} F30:1 Ip A1:1 C420jpeg\n".encode())
    for _ in range(30):
        f.write(b"FRAME\n")
        for p in planes:
            f.write(p)

# --- microphone: speech, pause, speech, pause (16 kHz mono S16) -----------------------------
base = Path("/usr/share/pocketsphinx/test/data/librivox")
pcm = b""
silence = b"\x00\x00" * 16000 * 3
for name in ("sense_and_sensibility_01_austen_64kb-0870", "sense_and_sensibility_01_austen_64kb-0880"):
    with wave.open(str(base / f"{name}.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm += w.readframes(w.getnframes()) + silence
with wave.open(str(out / "speech.wav"), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(pcm)
print(out)
