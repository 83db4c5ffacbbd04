"""Library code behind the Gradio app: the model registry, safe image loading, inference, explanations and results."""
