"""Trimtab explainer service: explains every rebalancing proposal driver by driver.

Consumes `rebalance.proposed.v1`, re-solves the proposal's snapshot under every coalition of
drivers (exact Shapley values, `trimtab.rebalance.explain`), stores the explanation and
publishes `explanation.created.v1`; serves explanations and narratives under `/v1/explanations`.
"""
