"""A prompt playground: ipywidgets in JupyterLab/Colab, plain output when there is no frontend.

``playground(model, tokenizer)`` returns the widget box (or None headless) and always runs one
generation for the initial prompt, so a notebook executed headless (nbmake, papermill) still shows a
real result.
"""

from __future__ import annotations

from .generate import generate


def run_once(model, tokenizer, prompt: str, *, max_new_tokens: int = 40, temperature: float = 0.0,
             chat: bool = False, seed: int = 0) -> str:
    sample = temperature > 0
    return generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, do_sample=sample,
                    temperature=temperature or 1.0, chat=chat, seed=seed, progress=False)[0]


def _frontend_available() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and "IPKernelApp" in getattr(ip, "config", {})
    except ImportError:
        return False


def playground(model, tokenizer, prompt: str = "The llama is an animal that", *, max_new_tokens: int = 40):
    """Interactive prompt box with temperature/length sliders and a chat-template toggle."""
    first = run_once(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
    print(f"{prompt}[{first}]")
    try:
        import ipywidgets as W
        from IPython.display import display
    except ImportError:
        return None
    if not _frontend_available():
        return None
    text = W.Textarea(value=prompt, layout=W.Layout(width="100%", height="80px"), description="prompt")
    temp = W.FloatSlider(value=0.0, min=0.0, max=1.5, step=0.1, description="temperature")
    length = W.IntSlider(value=max_new_tokens, min=8, max=256, step=8, description="new tokens")
    chat = W.Checkbox(value=False, description="chat template")
    button = W.Button(description="Generate", button_style="primary")
    out = W.Output()

    def on_click(_):
        with out:
            out.clear_output()
            completion = run_once(model, tokenizer, text.value, max_new_tokens=length.value,
                                  temperature=temp.value, chat=chat.value)
            print(f"{text.value}[{completion}]")

    button.on_click(on_click)
    box = W.VBox([text, W.HBox([temp, length, chat, button]), out])
    display(box)
    return box
