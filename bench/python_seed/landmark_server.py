"""The seed stack's landmark endpoint, for a side-by-side CPU comparison with Parley.

Written the way the seed projects' authors write it: FastAPI + uvicorn + websockets, numpy
vectorised per frame, cv2.solvePnP for head pose. It does the same math as Parley's per-frame
path: eye aspect ratio per eye, head pose against MediaPipe's canonical face, iris gaze, and a
scores message about once a second. Debian packages only: python3-fastapi, python3-uvicorn,
python3-websockets, python3-numpy, python3-opencv.

    python3 bench/python_seed/landmark_server.py --port 8765 --model vision/data/canonical_face_model.txt
"""
import argparse
import json
import math

import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

POSE_POINTS = np.array([33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 98, 327, 10, 151, 9,
                        234, 454, 127, 356])
RIGHT_LIDS = np.array([[161, 163], [160, 144], [159, 145], [158, 153], [157, 154]])
LEFT_LIDS = np.array([[388, 390], [387, 373], [386, 374], [385, 380], [384, 381]])
RIGHT_CORNERS = np.array([33, 133])
LEFT_CORNERS = np.array([263, 362])
IRISES = np.array([468, 473])

app = FastAPI()
MODEL = None  # canonical face, camera axes


def ear(pts, lids, corners):
    opening = np.linalg.norm(pts[lids[:, 0], :2] - pts[lids[:, 1], :2], axis=1).mean()
    width = np.linalg.norm(pts[corners[0], :2] - pts[corners[1], :2])
    return float(opening / width) if width > 0 else 0.0


def head_pose(pts, w, h, state):
    image = pts[POSE_POINTS, :2] * np.array([w, h])
    camera = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
    guess = state.get("pose")
    if guess is None:
        ok, rvec, tvec = cv2.solvePnP(MODEL[POSE_POINTS], image, camera, None)
    else:
        ok, rvec, tvec = cv2.solvePnP(MODEL[POSE_POINTS], image, camera, None, guess[0].copy(),
                                      guess[1].copy(), True)
    if not ok:
        state["pose"] = None
        return 0.0, 0.0, 0.0
    state["pose"] = (rvec, tvec)
    r, _ = cv2.Rodrigues(rvec)
    yaw = -math.degrees(math.atan2(r[0, 2], r[2, 2]))
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, r[1, 2]))))
    roll = math.degrees(math.atan2(r[1, 0], r[1, 1]))
    return yaw, pitch, roll


def iris_gaze(pts):
    centres = (pts[RIGHT_CORNERS, :2].mean(axis=0), pts[LEFT_CORNERS, :2].mean(axis=0))
    widths = (np.linalg.norm(pts[33, :2] - pts[133, :2]), np.linalg.norm(pts[263, :2] - pts[362, :2]))
    offsets = np.array([(pts[IRISES[i], :2] - centres[i]) / (widths[i] * 1.2 / 2.59) for i in (0, 1)])
    angles = np.degrees(np.arcsin(np.clip(offsets, -1, 1))).mean(axis=0)
    return float(angles[0]), float(-angles[1])


@app.websocket("/ws/landmarks")
async def landmarks(websocket: WebSocket):
    await websocket.accept()
    state = {"pose": None}
    next_scores = None
    ears, on_screen = [], []
    try:
        while True:
            frame = json.loads(await websocket.receive_text())
            pts = np.asarray(frame.get("landmarks") or [], dtype=np.float64)
            if len(pts) not in (468, 478):
                continue
            w, h = frame["width"], frame["height"]
            ears.append((ear(pts, RIGHT_LIDS, RIGHT_CORNERS) + ear(pts, LEFT_LIDS, LEFT_CORNERS)) / 2)
            yaw, pitch, roll = head_pose(pts, w, h, state)
            eye_yaw, eye_pitch = iris_gaze(pts) if len(pts) == 478 else (0.0, 0.0)
            on_screen.append(abs(yaw + eye_yaw) < 15 and abs(pitch + eye_pitch) < 12)
            t = frame["t"]
            if next_scores is None:
                next_scores = t + 1000
            if t >= next_scores:
                next_scores = t + 1000
                await websocket.send_json({
                    "type": "scores", "t": t, "frame_t": t,
                    "ear": float(np.mean(ears[-300:])),
                    "gaze_on_screen_ratio": float(np.mean(on_screen[-900:])),
                    "head_pose_deg": {"yaw": yaw, "pitch": pitch, "roll": roll},
                })
    except WebSocketDisconnect:
        pass


def main():
    global MODEL
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    m = np.loadtxt(args.model, comments="#")
    MODEL = np.ascontiguousarray(m * np.array([1, -1, -1]))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_max_size=4 << 20)


if __name__ == "__main__":
    main()
