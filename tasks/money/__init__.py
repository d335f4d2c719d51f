"""Money: the model catalog, usage and cost arithmetic, estimates and budgets, the row cache, cost columns."""
