"""Export trained runs for use outside PyTorch: ONNX graphs, vocabularies and a standalone example
(:mod:`rnnkit.export.onnx`; one graph module per task: :mod:`~rnnkit.export.lm`, :mod:`~rnnkit.export.tagger`,
:mod:`~rnnkit.export.seq2seq`, :mod:`~rnnkit.export.classify`; :mod:`~rnnkit.export.example` is the script copied
into every exported folder)."""
