"""`pipeline demo`: draw a digit (or upload a picture of one) and watch a model read it.

A Gradio app on loopback. What is drawn goes through exactly what `pipeline predict` does to a
file (imaging.to_mnist) and then to the same model (predict.DigitModel); the page shows the 28x28
image the model sees, its digit, and its ten probabilities. The model loads, and is checked to be
a digit reader, before the server starts: a missing champion is one line, not a page that fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from pipeline.core.errors import UsageError
from pipeline.core.signals import interrupt_on_signals
from pipeline.ship.imaging import ImageError, to_mnist
from pipeline.ship.models import DigitModel

INSTALL_HINT = 'pip install -e ".[demo]"'
TITLE = "pipeline: draw a digit"
SEEN_SCALE = 8  # the 28x28 image is shown 224x224, each pixel a visible square


def require_gradio():
    try:
        import gradio
    except ImportError:
        raise UsageError(f"`pipeline demo` needs Gradio, which is not installed here: "
                         f"{INSTALL_HINT}") from None
    return gradio


def _picture(value: Any) -> Image.Image | None:
    """The drawing or upload as one picture: a sketchpad gives layers and their composite."""
    if isinstance(value, dict):
        value = value.get("composite")
    if value is None:
        return None
    return value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value))


def read(model: DigitModel, value: Any) -> tuple[Image.Image | None, dict[str, float], str]:
    """The image the model sees (enlarged), the probabilities by digit, and a one-line answer."""
    picture = _picture(value)
    if picture is None:
        return None, {}, "Draw a digit, or upload a picture of one."
    try:
        pixels = to_mnist(picture, "the drawing")
    except ImageError as e:
        return None, {}, str(e).split(": ", 1)[-1]
    digits, probabilities = model.predict(pixels[None])
    digit = int(digits[0])
    seen = Image.fromarray((pixels * 255).astype(np.uint8)).resize(
        (28 * SEEN_SCALE, 28 * SEEN_SCALE), Image.NEAREST)
    if probabilities is None:  # a model from elsewhere: digits only
        return seen, {str(digit): 1.0}, f"Digit: {digit}"
    by_digit = {str(d): float(p) for d, p in enumerate(probabilities[0])}
    return seen, by_digit, f"Digit: {digit} (p={probabilities[0][digit]:.3f})"


def build_app(model: DigitModel):
    gr = require_gradio()
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"## {TITLE}\nModel `{model.uri}`: white or black ink, any size; the page "
                    "shows the 28x28 image the model reads.")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Draw"):
                    pad = gr.Sketchpad(type="pil", label="Sketchpad", elem_id="sketchpad",
                                       canvas_size=(280, 280), layers=False)
                with gr.Tab("Upload"):
                    upload = gr.Image(type="pil", label="Picture of a digit",
                                      sources=["upload", "clipboard"], elem_id="upload")
            with gr.Column():
                answer = gr.Markdown("Draw a digit, or upload a picture of one.",
                                     elem_id="answer")
                seen = gr.Image(label="What the model sees (28x28)", interactive=False,
                                elem_id="seen")
                bars = gr.Label(num_top_classes=10, label="Probabilities", elem_id="bars")

        def respond(value):
            image, by_digit, line = read(model, value)
            return image, by_digit, f"### {line}"

        outputs = [seen, bars, answer]
        pad.change(respond, inputs=pad, outputs=outputs, show_progress="hidden")
        upload.change(respond, inputs=upload, outputs=outputs, show_progress="hidden")
    return app


def run_demo(uri: str, host: str, port: int, echo=print) -> None:
    from pipeline.track.mlflow_ui import port_is_free

    require_gradio()
    if not port_is_free(host, port):
        raise UsageError(f"port {port} on {host} is in use; choose another with --port")
    model = DigitModel(uri)  # no model, or not a digit reader: one line, before any server
    app = build_app(model)
    echo(f"demo of {uri} at http://{host}:{port}  (Ctrl-C to stop)")
    # Gradio closes its server on KeyboardInterrupt: SIGTERM stops it as Ctrl-C does.
    with interrupt_on_signals():
        app.launch(server_name=host, server_port=port, share=False, quiet=True,
                   show_error=True)
