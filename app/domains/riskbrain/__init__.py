"""Risk Brain: tail risk of the account's equity curve and of its open book, a 0-100 score, and actions."""
