"""Drift: how far the records a model version serves have moved from the records it was
trained on, feature by feature.

`reference` is the training side: each of the contract's features summarised as bucket
shares (categories with an "other" bucket, numeric histograms with edges fixed at training),
logged with every model version. `window` is the serving side: a rolling window of the records
served, bucketed the same way, and its population stability index (PSI) per feature against
the reference. `verdict` decides whether drift calls for a retrain.
"""
