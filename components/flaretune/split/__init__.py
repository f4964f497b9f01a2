"""Split learning for language models (FL-GLM, arXiv:2406.14898): sites keep embeddings, edge blocks and
head; the server runs the middle. Pure parts: :mod:`.model` (the cut), :mod:`.steps` (one step per side),
:mod:`.serve` (several sites per server step); FLARE glue: :mod:`.controller`, :mod:`.executor`."""
