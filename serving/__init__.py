"""Library code behind the Gradio app: safe image loading, inference, explanations and results."""
