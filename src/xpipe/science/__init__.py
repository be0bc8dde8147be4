"""The paper's science outputs on a classified warehouse: the BIC curve that chooses K, the
held-out validation, the stability of the clustering, per-source explanations and the HTML
report that shows them as figures."""
