"""Random TOML documents (valid and not) in docs/N.toml under the current folder, and what Python's
tomllib reads from each in expected.json (null where it refuses): the Python side of
scripts/toml_differential.sh. Usage: generate.py SEED COUNT"""
import random, tomllib, json, os, sys, math
random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
def key():
    r = random.random()
    if r < 0.6: return random.choice(["a","b","c","samples","x_y","k-1","1","T"])
    if r < 0.8: return '"' + random.choice(["q k", "é", "a.b", ""]) + '"'
    return "'" + random.choice(["lit", "x y", "a\\b"]) + "'"
def scalar():
    r = random.random()
    if r < 0.2: return str(random.randint(-10**12, 10**12)), None
    if r < 0.3: return random.choice(["0x1F", "0o17", "0b101", "1_000", "+5", "-0", "9223372036854775807"]), None
    if r < 0.5: return random.choice(["3.25", "-2e-3", "6.626e-34", "1E5", "0.0", "-0.5", "inf", "-inf", "nan", "+1.5", "1_0.5", "5e+2"]), None
    if r < 0.6: return random.choice(["true", "false"]), None
    if r < 0.8:
        s = random.choice(["", "plain", "tab\\t", "q\\\"", "\\u00e9", "\\U0001F600", "back\\\\slash"])
        return '"' + s + '"', None
    if r < 0.9: return "'" + random.choice(["", "raw\\n", "x"]) + "'", None
    return '"""\nml\\\n   joined"""', None
def value(d=0):
    r = random.random()
    if d < 3 and r < 0.15: return "[" + ", ".join(value(d+1) for _ in range(random.randint(0,3))) + ("," if random.random()<0.3 else "") + "]"
    if d < 3 and r < 0.25:
        keys = random.sample(["p","q","r","s"], random.randint(0,3))
        return "{" + ", ".join(f"{k} = {value(d+1)}" for k in keys) + "}"
    return scalar()[0]
def doc():
    lines = []
    for _ in range(random.randint(1, 8)):
        r = random.random()
        if r < 0.15: lines.append("[" + ".".join(key() for _ in range(random.randint(1,2))) + "]")
        elif r < 0.25: lines.append("[[" + key() + "]]")
        elif r < 0.3: lines.append("# comment " + str(random.random()))
        else: lines.append(".".join(key() for _ in range(random.randint(1,2))) + " = " + value() + random.choice(["", "  # c"]))
    return "\n".join(lines) + "\n"
def norm(v):
    if isinstance(v, bool): return v
    if isinstance(v, int): return {"int": str(v)}
    if isinstance(v, float):
        if math.isnan(v): return {"float": "nan"}
        if math.isinf(v): return {"float": "inf" if v > 0 else "-inf"}
        return {"float": repr(v)}
    if isinstance(v, str): return v
    if isinstance(v, list): return [norm(x) for x in v]
    if isinstance(v, dict): return {k: norm(x) for k, x in v.items()}
    raise TypeError(type(v))
os.makedirs("docs", exist_ok=True)
expected = []
for i in range(COUNT):
    text = doc()
    open(f"docs/{i}.toml", "w").write(text)
    try:
        expected.append(norm(tomllib.loads(text)))
    except tomllib.TOMLDecodeError:
        expected.append(None)
json.dump(expected, open("expected.json", "w"))
