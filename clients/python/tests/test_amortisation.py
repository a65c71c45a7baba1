"""The results script's judgements, on rows made up for the purpose (no daemon)."""
from mpcd_client.amortisation import acceptance, shortfall


def row(label, returns, optima, compute_ms=0.05, iterations=0.4):
    mean, optimum = sum(returns) / len(returns), sum(optima) / len(optima)
    return {"label": label, "seeds": list(range(len(returns))), "returns": returns, "optima": optima,
            "mean": mean, "optimum": optimum, "distance": (optimum - mean) / abs(optimum),
            "compute_ms": compute_ms, "iterations": iterations}


def test_shortfall_names_the_seeds_furthest_below_the_optimum_and_their_share():
    # gaps 0, 30, 10, 60, -5 (one seed above its grid optimum): total 95
    r = row("embedded default (as shipped)", [-100, -150, -130, -260, -95], [-100, -120, -120, -200, -100])
    text = shortfall(r, count=2)
    assert "fall 95 short" in text
    assert "the 2 seeds furthest below carry 95%" in text  # (60 + 30) / 95
    assert text.index("3 (-260.0 against -200.0)") < text.index("1 (-150.0 against -120.0)")
    assert "2 (" not in text and "embedded default's" in text


def test_shortfall_of_a_row_at_or_above_the_optimum_is_no_share():
    text = shortfall(row("policy", [-90, -100], [-100, -100]), count=1)
    assert "carry 0%" in text


def test_acceptance_judges_each_point_from_its_rows():
    def rows(default_mean, default_ms, alone_mean):
        optimum = [-133.3]
        return [row("embedded default (as shipped)", [default_mean], optimum, compute_ms=default_ms),
                row("distilled policy alone (the embedded network)", [alone_mean], optimum),
                row("policy prior + 1 iteration, K=256", [-137.0], optimum),
                row("planner alone, 4 iterations, K=256", [-143.0], optimum),
                row("pendulum_value.toml (H=16, learned value)", [-150.0], optimum),
                row("pendulum_value.toml without its value", [-160.0], optimum)]

    met = [m for _, m in acceptance(rows(-135.2, 0.09, -138.9))]
    assert met == [True, True, True, True]
    # 1.5% of 133.3 is 2.0: -135.4 is just outside; fast enough is not enough
    assert [m for _, m in acceptance(rows(-135.4, 0.09, -138.9))][0] is False
    # within 1.5% but over the 0.1 ms budget
    assert [m for _, m in acceptance(rows(-134.0, 0.11, -138.9))][0] is False
    assert [m for _, m in acceptance(rows(-134.0, 0.05, -139.1))][1] is False
