"""An RTSP camera on 127.0.0.1 for the guard's tests: Debian's GStreamer RTSP server (python3-gi).

Run by the system Python (not the venv): `/usr/bin/python3 rtsp_server.py PORT FRAME.jpg FPS`.
It serves rtsp://127.0.0.1:PORT/cam, H.264 encoded live from FRAME.jpg, read again for every
frame, so the test changes what the camera sees by replacing that file (os.replace). Prints
"ready PORT" once listening; runs until terminated.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, frame, fps = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( multifilesrc location={frame} loop=true caps=image/jpeg,framerate={fps}/1 ! jpegdec ! videoconvert ! "
    f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)  # one live pipeline for every client: a reconnecting guard sees the present
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", port, flush=True)
GLib.MainLoop().run()
