"""The results script's judgements, on rows made up for the purpose (no daemon)."""
from mpcd_client.amortisation import acceptance, shortfall


def row(label, returns, optima, compute_ms=0.05, iterations=0.4):
    mean, optimum = sum(returns) / len(returns), sum(optima) / len(optima)
    return {"label": label, "seeds": list(range(len(returns))), "returns": returns, "optima": optima,
            "mean": mean, "optimum": optimum, "distance": (optimum - mean) / abs(optimum),
            "compute_ms": compute_ms, "iterations": iterations}


def test_shortfall_names_the_seeds_furthest_below_the_optimum_and_their_share():
    # gaps 0, 30, 10, 60, -5 (the last seed above its grid optimum, which takes nothing off): 100 short on 3 seeds
    r = row("embedded default (as shipped)", [-100, -150, -130, -260, -95], [-100, -120, -120, -200, -100])
    text = shortfall(r, count=2)
    assert "on 3 of the 5 seeds it ends below the optimum, 100 short in all" in text
    assert "the 2 seeds furthest below carry 90%" in text  # (60 + 30) / 100
    assert text.index("seed 3 (-260.0 against -200.0)") < text.index("seed 1 (-150.0 against -120.0)")
    assert "seed 2 " not in text and "embedded default's" in text


def test_seeds_above_their_optimum_neither_shrink_the_shortfall_nor_inflate_the_share():
    # one seed 50 below, one 45 above: 50 short, all of it in the one seed
    text = shortfall(row("policy", [-150, -55], [-100, -100]), count=1)
    assert "on 1 of the 2 seeds" in text and "50 short in all" in text and "carry 100%" in text
    text = shortfall(row("policy", [-90, -100], [-100, -100]), count=1)
    assert "on 0 of the 2 seeds" in text and "0 short in all" in text and "carry 0% of that: none" in text


def rows(default_mean=-135.2, default_ms=0.09, alone_mean=-138.9, prior_one=-137.0, planner_four=-143.0,
         value=-150.0, no_value=-160.0, optimum=-133.3):
    optimum = [optimum]
    return [row("embedded default (as shipped)", [default_mean], optimum, compute_ms=default_ms),
            row("distilled policy alone (the embedded network)", [alone_mean], optimum),
            row("policy prior + 1 iteration, K=256", [prior_one], optimum),
            row("planner alone, 4 iterations, K=256", [planner_four], optimum),
            row("pendulum_value.toml (H=16, learned value)", [value], optimum),
            row("pendulum_value.toml without its value", [no_value], optimum)]


def judged(**changes):
    return [met for _, met in acceptance(rows(**changes))]


def test_acceptance_judges_each_point_from_its_rows():
    assert judged() == [True, True, True, True]
    # the default: 1.5% of an optimum of -100 is -101.5, met at the mark, not past it; 0.1 ms likewise
    assert judged(optimum=-100, default_mean=-101.5, default_ms=0.1)[0] is True
    assert judged(optimum=-100, default_mean=-101.6)[0] is False
    assert judged(default_ms=0.1001)[0] is False
    # the policy alone at -139 or better
    assert judged(alone_mean=-139.0)[1] is True
    assert judged(alone_mean=-139.01)[1] is False
    # the prior with one iteration strictly ahead of the planner alone with four
    assert judged(prior_one=-143.0)[2] is False
    assert judged(prior_one=-142.9)[2] is True
    # the value strictly ahead of no value
    assert judged(value=-160.0)[3] is False
    assert judged(value=-170.0)[3] is False
