"""Publishing to and loading from the Hugging Face Hub.

``export`` writes a model folder, ``load`` reads one (local or Hub), ``card`` writes its model card, ``push`` and
``push_space`` publish a model and the app (sharing ``upload``), and ``registry`` says which models the app uses.
"""
