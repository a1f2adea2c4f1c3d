"""qtdog_serve: the Gradio demo of a qtdog model (``qtdog demo``, ``python -m qtdog_serve``).

``qtdog_serve.app`` holds the app (``build_app``, ``launch``) and needs the
``demo`` extra (gradio); ``qtdog_serve.modelinfo`` renders model facts and
predictions without it.
"""
