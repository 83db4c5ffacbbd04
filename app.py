"""Gradio app (a Hugging Face Space): classify a white-blood-cell image as ALL or HEM.

Placeholder until the app issue lands: it starts, and says where the models come from.
"""

import gradio as gr

with gr.Blocks(title="C-NMC ALL detector") as demo:
    gr.Markdown(
        "# Acute lymphoblastic leukaemia (ALL) vs healthy (HEM) cells\n"
        "Research and education only, not for diagnosis. The trained models are not published yet: "
        "train one with `accelerate launch -m training.train` (see README.md)."
    )

if __name__ == "__main__":
    demo.launch()
