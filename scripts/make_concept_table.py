"""Write ``captioner/data/imagenet_concepts.tsv``: an everyday English noun for each of the 1000
ImageNet classes of the encoder's head.

Run once by a maintainer; the table is committed and nothing at run time needs WordNet or nltk.

    python scripts/make_concept_table.py [--out captioner/data/imagenet_concepts.tsv]

What it needs (fetched into a temporary folder, never installed into the project's environment):

- WordNet 3.0 from Debian's ``wordnet-base`` (``apt-get download wordnet-base`` + ``dpkg -x``),
  or a folder with its ``data.noun`` / ``index.noun`` files given by ``--wordnet``;
- nltk's WordNet corpus reader (``pip install --target DIR nltk``), or ``--nltk DIR``;
- timm (already a dependency) for the 1000 synset ids in the classifier's order.

Each class climbs its WordNet hypernyms to the nearest synset in :data:`ENTRY_LEVEL` (a reviewed
list of the words people use: "dog", not "golden retriever"); :data:`OVERRIDES` decides the
classes where WordNet's tree gives a word nobody would say. A class with neither keeps its own
first lemma.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "captioner" / "data" / "imagenet_concepts.tsv"

# WordNet's lexicographer file names; Debian's wordnet-base leaves this file out and nltk needs it.
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body
verb.change verb.cognition verb.communication verb.competition verb.consumption verb.contact
verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative
verb.weather adj.ppl""".split()

# Entry-level words: WordNet synset -> the word (plural after "/" when not regular).
ENTRY_LEVEL = {
    # animals
    "dog.n.01": "dog",
    "wolf.n.01": "wolf/wolves",
    "fox.n.01": "fox",
    "domestic_cat.n.01": "cat",
    "wildcat.n.03": "wildcat",
    "bear.n.01": "bear",
    "monkey.n.01": "monkey",
    "ape.n.01": "ape",
    "lemur.n.01": "lemur",
    "elephant.n.01": "elephant",
    "horse.n.01": "horse",
    "zebra.n.01": "zebra",
    "bovine.n.01": "cow",
    "sheep.n.01": "sheep/sheep",
    "goat.n.01": "goat",
    "antelope.n.01": "antelope",
    "deer.n.01": "deer/deer",
    "swine.n.01": "pig",
    "rabbit.n.01": "rabbit",
    "squirrel.n.01": "squirrel",
    "mouse.n.01": "mouse/mice",
    "rat.n.01": "rat",
    "whale.n.02": "whale",
    "dolphin.n.02": "dolphin",
    "seal.n.09": "seal",
    "weasel.n.02": "weasel",
    "bird.n.01": "bird",
    "parrot.n.01": "parrot",
    "owl.n.01": "owl",
    "eagle.n.01": "eagle",
    "hawk.n.01": "hawk",
    "duck.n.01": "duck",
    "goose.n.01": "goose/geese",
    "swan.n.01": "swan",
    "penguin.n.01": "penguin",
    "chicken.n.02": "chicken",
    "hummingbird.n.01": "hummingbird",
    "fish.n.01": "fish/fish",
    "shark.n.01": "shark",
    "ray.n.07": "ray",
    "snake.n.01": "snake",
    "lizard.n.01": "lizard",
    "crocodilian_reptile.n.01": "crocodile",
    "turtle.n.02": "turtle",
    "frog.n.01": "frog",
    "salamander.n.01": "salamander",
    "spider.n.01": "spider",
    "butterfly.n.01": "butterfly",
    "moth.n.01": "moth",
    "beetle.n.01": "beetle",
    "bee.n.01": "bee",
    "ant.n.01": "ant",
    "insect.n.01": "insect",
    "crab.n.01": "crab",
    "lobster.n.02": "lobster",
    "snail.n.01": "snail",
    "jellyfish.n.02": "jellyfish/jellyfish",
    # vehicles
    "car.n.01": "car",
    "truck.n.01": "truck",
    "bus.n.01": "bus/buses",
    "motorcycle.n.01": "motorbike",
    "motorbike.n.01": "motorbike",
    "bicycle.n.01": "bicycle",
    "airplane.n.01": "plane",
    "boat.n.01": "boat",
    "ship.n.01": "ship",
    "train.n.01": "train",
    "locomotive.n.01": "train",
    "tractor.n.01": "tractor",
    # furniture and household
    "chair.n.01": "chair",
    "table.n.02": "table",
    "bed.n.01": "bed",
    "sofa.n.01": "sofa",
    "desk.n.01": "desk",
    "lamp.n.02": "lamp",
    "cup.n.01": "cup",
    "mug.n.04": "mug",
    "bottle.n.01": "bottle",
    "bowl.n.03": "bowl",
    "pot.n.01": "pot",
    "glass.n.02": "glass/glasses",
    "bag.n.04": "bag",
    "bag.n.01": "bag",
    "basket.n.01": "basket",
    "box.n.01": "box/boxes",
    "clock.n.01": "clock",
    "watch.n.01": "watch/watches",
    "computer.n.01": "computer",
    "telephone.n.01": "phone",
    "television_receiver.n.01": "television",
    "hat.n.01": "hat",
    "shoe.n.01": "shoe",
    "ball.n.01": "ball",
    "guitar.n.01": "guitar",
    "piano.n.01": "piano",
    "drum.n.01": "drum",
    "bowed_stringed_instrument.n.01": "violin",
    "brass.n.02": "trumpet",
    "house.n.01": "house",
    "church.n.02": "church",
    "bridge.n.01": "bridge",
    "tent.n.01": "tent",
    "umbrella.n.01": "umbrella",
    "knife.n.01": "knife/knives",
    "spoon.n.01": "spoon",
    "hammer.n.02": "hammer",
    "screwdriver.n.01": "screwdriver",
    "camera.n.01": "camera",
    "boot.n.01": "boot",
    "book.n.01": "book",
    # food
    "banana.n.02": "banana",
    "orange.n.01": "orange",
    "lemon.n.01": "lemon",
    "apple.n.01": "apple",
    "strawberry.n.01": "strawberry/strawberries",
    "pineapple.n.02": "pineapple",
    "fig.n.04": "fig",
    "pomegranate.n.02": "pomegranate",
    "broccoli.n.02": "broccoli/broccoli",
    "cauliflower.n.02": "cauliflower/cauliflowers",
    "cabbage.n.01": "cabbage",
    "cucumber.n.02": "cucumber",
    "squash.n.02": "squash/squashes",
    "sweet_pepper.n.02": "pepper",
    "mushroom.n.05": "mushroom",
    "mushroom.n.02": "mushroom",
    "mushroom.n.03": "mushroom",
    "fungus.n.01": "mushroom",
    "pizza.n.01": "pizza",
    "hamburger.n.01": "burger",
    "hotdog.n.02": "hot dog",
    "bread.n.01": "bread/breads",
    "coffee.n.01": "coffee/coffees",
    "wine.n.01": "wine/wines",
    "soup.n.01": "soup/soups",
    "pasta.n.02": "pasta/pastas",
    "ice_cream.n.01": "ice cream/ice creams",
    "flower.n.01": "flower",
    "tree.n.01": "tree",
    "person.n.01": "person/people",
}

# Reviewed choices where the tree's nearest entry-level word is wrong or missing, by lemma.
OVERRIDES = {
    "tabby": "cat",
    "tiger cat": "cat",
    "Persian cat": "cat",
    "Siamese cat": "cat",
    "Egyptian cat": "cat",
    "espresso": "coffee/coffees",
    "moped": "motorbike",
    "motor scooter": "scooter",
    "golden retriever": "dog",
    "coffee mug": "cup",
    "fire engine": "fire truck/fire trucks",
    "cup": "cup",
    "Granny Smith": "apple",
    "hen": "chicken",
    "cock": "chicken",
    "cheeseburger": "burger",
    "hotdog": "hot dog",
    "French loaf": "bread/breads",
    "teddy": "teddy bear",
    "red wine": "wine/wines",
    "cellular telephone": "phone",
    "iPod": "music player",
    "laptop": "laptop",
    "notebook": "laptop",
    "desktop computer": "computer",
    "television": "television",
    "monitor": "monitor",
    "screen": "screen",
    "sports car": "car",
    "racer": "car",
    "limousine": "car",
    "cab": "taxi",
    "minivan": "van",
    "moving van": "van",
    "police van": "van",
    "school bus": "bus/buses",
    "trolleybus": "bus/buses",
    "minibus": "bus/buses",
    "airliner": "plane",
    "warplane": "plane",
    "airship": "airship",
    "space shuttle": "space shuttle",
    "missile": "rocket",
    "projectile": "rocket",
    "mountain bike": "bicycle",
    "bicycle-built-for-two": "bicycle",
    "tricycle": "tricycle",
    "unicycle": "unicycle",
    "electric guitar": "guitar",
    "acoustic guitar": "guitar",
    "grand piano": "piano",
    "upright": "piano",
    "tiger": "tiger",
    "lion": "lion",
    "leopard": "leopard",
    "snow leopard": "leopard",
    "jaguar": "jaguar",
    "cheetah": "cheetah",
    "cougar": "cougar",
    "lynx": "lynx/lynxes",
    "ice bear": "bear",
    "giant panda": "panda",
    "lesser panda": "red panda",
    "gorilla": "gorilla",
    "chimpanzee": "chimpanzee",
    "orangutan": "orangutan",
    "ox": "cow",
    "water buffalo": "buffalo/buffaloes",
    "bison": "bison/bison",
    "ram": "sheep/sheep",
    "hog": "pig",
    "wild boar": "boar",
    "hippopotamus": "hippo",
    "Arabian camel": "camel",
    "llama": "llama",
    "ostrich": "ostrich/ostriches",
    "flamingo": "flamingo",
    "pelican": "pelican",
    "peacock": "peacock",
    "great white shark": "shark",
    "tench": "fish/fish",
    "goldfish": "goldfish/goldfish",
    "scuba diver": "diver",
    "groom": "man/men",
    "ballplayer": "baseball player",
    "daisy": "flower",
    "volcano": "volcano/volcanoes",
    "web site": "website",
    "comic book": "comic book",
    "traffic light": "traffic light",
    "street sign": "street sign",
    "pool table": "pool table",
    "dining table": "table",
    "pop bottle": "bottle",
    "beer bottle": "bottle",
    "wine bottle": "bottle",
    "water bottle": "bottle",
    "pill bottle": "bottle",
    "water jug": "jug",
    "whiskey jug": "jug",
    "beer glass": "glass/glasses",
    "goblet": "glass/glasses",
    "coffeepot": "coffee pot",
    "teapot": "teapot",
    "espresso maker": "coffee machine",
    "plate": "plate",
    "lens cap": "lens cap",
    "bell pepper": "pepper",
    "jack-o'-lantern": "pumpkin",
    "wall clock": "clock",
    "analog clock": "clock",
    "digital clock": "clock",
    "digital watch": "watch/watches",
    "stopwatch": "stopwatch/stopwatches",
    "running shoe": "shoe",
    "Loafer": "shoe",
    "clog": "shoe",
    "cowboy boot": "boot",
    "backpack": "backpack",
    "purse": "bag",
    "mailbag": "bag",
    "plastic bag": "bag",
    "sleeping bag": "sleeping bag",
    "soccer ball": "ball",
    "tennis ball": "ball",
    "golf ball": "ball",
    "rugby ball": "ball",
    "basketball": "ball",
    "volleyball": "ball",
    "croquet ball": "ball",
    "ping-pong ball": "ball",
    "baseball": "ball",
    "football helmet": "helmet",
    "crash helmet": "helmet",
    "cowboy hat": "hat",
    "sombrero": "hat",
    "mortarboard": "hat",
    "bonnet": "hat",
    "killer whale": "whale",
    "coyote": "coyote",
    "ambulance": "ambulance",
    "monastery": "monastery",
    "palace": "palace",
    "punching bag": "punching bag",
    "slide rule": "slide rule",
    "safe": "safe",
    "mailbox": "mailbox/mailboxes",
    "wreck": "shipwreck",
    "meat loaf": "meat loaf/meat loaves",
    "cello": "cello",
    "trombone": "trombone",
    "French horn": "horn",
    "submarine": "submarine",
    "mouse": "computer mouse/computer mice",
    "plane": "hand plane",
    "tusker": "elephant",
    "maillot": "swimsuit",
    "jean": "jeans/jeans",
    "sunglass": "sunglasses/sunglasses",
    "sunglasses": "sunglasses/sunglasses",
    "binoculars": "binoculars/binoculars",
    "ear": "corn/corn",
    "corn": "corn/corn",
    "hip": "rose hip",
    "pot": "flowerpot",
    "brass": "plaque",
    "file": "filing cabinet",
    "stole": "scarf/scarves",
    "rule": "ruler",
    "sax": "saxophone",
    "jersey": "t-shirt",
    "pick": "guitar pick",
    "nipple": "baby bottle",
    "velvet": "fabric",
    "wool": "wool/wool",
    "wing": "plane",
    "switch": "light switch/light switches",
    "alp": "mountain",
    "lakeside": "lake",
    "seashore": "beach/beaches",
    "promontory": "cliff",
    "sandbar": "beach/beaches",
    "toilet tissue": "toilet paper/toilet paper",
    "ashcan": "trash can",
    "barrow": "wheelbarrow",
    "bannister": "banister",
    "ballpoint": "pen",
    "fountain pen": "pen",
    "washer": "washing machine",
    "vacuum": "vacuum cleaner",
    "amphibian": "amphibious vehicle",
    "hand blower": "hair dryer",
    "slot": "slot machine",
    "space bar": "keyboard",
    "computer keyboard": "keyboard",
    "typewriter keyboard": "typewriter",
    "passenger car": "train",
    "freight car": "train",
    "streetcar": "tram",
    "jinrikisha": "rickshaw",
    "half track": "truck",
    "recreational vehicle": "camper van",
    "golfcart": "golf cart",
    "dogsled": "sled",
    "bobsled": "sled",
    "Crock Pot": "slow cooker",
    "Dutch oven": "pot",
    "plate rack": "dish rack",
    "chiffonier": "dresser",
    "medicine chest": "cabinet",
    "china cabinet": "cabinet",
    "entertainment center": "TV cabinet",
    "brassiere": "bra",
    "hoopskirt": "skirt",
    "overskirt": "skirt",
    "miniskirt": "skirt",
    "pajama": "pajamas/pajamas",
    "swimming trunks": "swimming trunks/swimming trunks",
    "parallel bars": "parallel bars/parallel bars",
    "dishrag": "dishcloth",
    "apiary": "beehive",
    "bell cote": "bell tower",
    "vault": "ceiling",
    "tile roof": "roof",
    "thatch": "thatched roof",
    "shoji": "paper screen",
    "triceratops": "dinosaur",
    "trilobite": "fossil",
    "harvestman": "spider",
    "dingo": "dog",
    "dhole": "dog",
    "African hunting dog": "dog",
    "bighorn": "sheep/sheep",
    "polecat": "ferret",
    "black-footed ferret": "ferret",
    "three-toed sloth": "sloth",
    "isopod": "woodlouse/woodlice",
    "flatworm": "worm",
    "nematode": "worm",
    "conch": "shell",
    "chambered nautilus": "nautilus/nautiluses",
    "brain coral": "coral",
    "crayfish": "crayfish/crayfish",
    "hermit crab": "crab",
    "mashed potato": "mashed potatoes/mashed potatoes",
    "guacamole": "guacamole/guacamole",
    "carbonara": "pasta/pastas",
    "chocolate sauce": "chocolate sauce",
    "eggnog": "eggnog",
    "consomme": "soup/soups",
    "trifle": "dessert",
    "ice lolly": "ice lolly/ice lollies",
    "hay": "hay/hay",
    "rapeseed": "rapeseed/rapeseed",
    "dough": "dough",
    "hot pot": "hot pot",
    "honeycomb": "honeycomb",
    "spider web": "spider web",
    "coral reef": "coral reef",
    "mosquito net": "mosquito net",
    "crane": "crane",
    "tank": "tank",
    "quill": "quill pen",
}


def plural(word: str) -> str:
    """A regular English plural of the last word (irregular ones are written in the tables)."""
    head, _, last = word.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        out = last + "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        out = last[:-1] + "ies"
    else:
        out = last + "s"
    return f"{head} {out}" if head else out


def split_entry(entry: str) -> tuple[str, str]:
    word, _, many = entry.partition("/")
    return word, many or plural(word)


def fetch_wordnet(tmp: Path) -> Path:
    """Debian's wordnet-base unpacked into ``tmp`` -> the folder of its dictionary files."""
    subprocess.run(["apt-get", "download", "wordnet-base"], cwd=tmp, check=True)
    deb = next(tmp.glob("wordnet-base_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(tmp / "wn")], check=True)
    return tmp / "wn" / "usr" / "share" / "wordnet"


def fetch_nltk(tmp: Path) -> Path:
    target = tmp / "nltk-lib"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "nltk"]
    subprocess.run(cmd, check=True)
    return target


def open_wordnet(root: Path, nltk_dir: Path):
    sys.path.insert(0, str(nltk_dir))
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if not (root / "lexnames").is_file():
        pos = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
        lines = [f"{i:02d}\t{name}\t{pos[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
        (root / "lexnames").write_text("\n".join(lines) + "\n")
    nltk.data.path.append(str(root))  # nltk reads only from folders it was told about

    class Reader(WordNetCorpusReader):
        # Debian's files lack the "WordNet 3.0 Copyright" line nltk finds the version by, so
        # nltk would try to map them onto its own downloaded WordNet: they already are 3.0.
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return Reader(str(root), None)


def imagenet_classes() -> list[tuple[str, str]]:
    """(wnid, first lemma) for the 1000 classes, in the classifier's output order."""
    from importlib.resources import files

    info = files("timm") / "data" / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        wnid, _, text = line.partition("\t")
        lemmas[wnid] = text.split(",")[0].strip()
    assert len(wnids) == 1000, len(wnids)
    return [(w, lemmas[w]) for w in wnids]


# Classes under these synsets are places, not things: an object slot never names them, tags do.
PLACES = ("geological_formation.n.01",)


def kind_of(wn, wnid: str) -> str:
    """ "place" for a landscape class (lakeside, valley, alp...), else "thing"."""
    synset = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
    above = {node.name() for path in synset.hypernym_paths() for node in path}
    return "place" if above & set(PLACES) else "thing"


def concept_for(wn, wnid: str, lemma: str) -> tuple[str, str, str]:
    """-> (word, plural, how) for one class."""
    if lemma in OVERRIDES:
        return (*split_entry(OVERRIDES[lemma]), "override")
    synset = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
    best: tuple[int, str] | None = None
    for path in synset.hypernym_paths():
        for depth, node in enumerate(reversed(path)):  # the class itself first, then upwards
            if node.name() in ENTRY_LEVEL:
                if best is None or depth < best[0]:
                    best = (depth, node.name())
                break
    if best is not None:
        return (*split_entry(ENTRY_LEVEL[best[1]]), f"wordnet:{best[1]}")
    word = lemma if lemma[:1].isupper() and " " not in lemma else lemma.lower()
    return word, plural(word), "lemma"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--wordnet", type=Path, help="folder of WordNet 3.0 dict files")
    parser.add_argument("--nltk", type=Path, help="folder where nltk is importable from")
    parser.add_argument("--report", action="store_true", help="print how each class was named")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        root = args.wordnet or fetch_wordnet(tmp)
        wn = open_wordnet(root, args.nltk or fetch_nltk(tmp))
        for name in ENTRY_LEVEL:
            wn.synset(name)  # a typo in the reviewed list fails here, not silently
        lemmas = {lemma for _, lemma in imagenet_classes()}
        unused = sorted(set(OVERRIDES) - lemmas)
        if unused:
            raise SystemExit(f"overrides for no ImageNet class (check the spelling): {unused}")
        rows = []
        for index, (wnid, lemma) in enumerate(imagenet_classes()):
            word, many, how = concept_for(wn, wnid, lemma)
            rows.append((index, wnid, lemma, word, many, kind_of(wn, wnid)))
            if args.report:
                print(f"{index}\t{lemma}\t{word}\t{how}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = "# ImageNet class -> everyday noun; written by scripts/make_concept_table.py\n"
    body = "".join("\t".join(map(str, r)) + "\n" for r in rows)
    args.out.write_text(header + "index\twnid\tlemma\tword\tplural\tkind\n" + body)
    print(f"wrote {args.out}: {len(rows)} classes, {len({r[3] for r in rows})} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
