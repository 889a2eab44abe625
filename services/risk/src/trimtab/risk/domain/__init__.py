"""The risk service's pure domain: EWMA covariance, price book, portfolio volatility, flags."""
