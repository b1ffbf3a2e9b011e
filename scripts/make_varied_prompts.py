"""Write prompts/varied.txt: ~300 original prompts from easy to hard.

The set spans what makes a prompt hard for a small, few-step model -- several
objects, counting, spatial relations, rendered text, named styles, abstract
ideas, long scene descriptions -- so a router and a discriminator have
something to separate. Hand-written lists plus a few curated templates (each
template only combines parts that make sense together). Deterministic: the
output is shuffled with a fixed seed so any prefix (``--limit``) is a mix.

    python scripts/make_varied_prompts.py            # rewrite prompts/varied.txt
    python scripts/make_varied_prompts.py --check    # fail if the file is stale
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "prompts" / "varied.txt"
SEED = 20250901

SIMPLE = [
    "a red apple",
    "a wooden chair",
    "a cup of coffee",
    "a yellow umbrella",
    "a sleeping cat",
    "a paper airplane",
    "a bowl of ramen",
    "an old bicycle",
    "a lighthouse",
    "a pine tree in the snow",
    "a glass of orange juice",
    "a pair of running shoes",
    "a sunflower",
    "a teapot",
    "a golden retriever puppy",
    "a stack of books",
    "a hot air balloon",
    "a red fire hydrant",
    "a sailboat",
    "a slice of watermelon",
    "a vintage typewriter",
    "a snow-capped mountain",
    "a brass door knocker",
    "a green frog",
    "a loaf of sourdough bread",
    "an acoustic guitar",
    "a blue ceramic vase",
    "a rubber duck",
    "a full moon",
    "a desert cactus",
    "a chocolate cupcake",
    "a pocket watch",
    "a butterfly",
    "a city bus",
    "a candle flame",
    "a wooden rowboat",
    "a bonsai tree",
    "a knitted scarf",
    "an owl",
    "a lemon cut in half",
]

DESCRIBED = [
    "a golden retriever lying on a porch at sunset",
    "a steaming bowl of pho on a wooden table, seen from above",
    "a foggy forest path in early morning light",
    "an abandoned greenhouse overgrown with ivy",
    "a fishing village on stilts at low tide",
    "a narrow cobblestone street after rain, lit by shop windows",
    "a red tram climbing a steep hill on a sunny day",
    "a quiet library with tall shelves and a rolling ladder",
    "a field of lavender under a stormy sky",
    "a close-up of dew drops on a spider web",
    "a snowy mountain cabin with smoke rising from the chimney",
    "a night market with paper lanterns and food stalls",
    "a lone tree on a hill during a thunderstorm",
    "a cozy kitchen with copper pots hanging over the stove",
    "a tide pool full of starfish and sea anemones",
    "a desert highway stretching to the horizon at noon",
    "an old train station with a glass roof and pigeons",
    "a rooftop garden in the middle of a busy city",
    "a frozen lake with skaters under a pink sky",
    "a macro photo of a honeybee covered in pollen",
    "a rainy window with blurred city lights behind it",
    "a mossy stone bridge over a small stream",
    "a bakery display full of croissants and fruit tarts",
    "a wheat field with a red barn in late summer",
    "a jellyfish glowing in dark blue water",
    "a hammock strung between two palm trees on a white beach",
    "a busy harbor with cranes and container ships at dusk",
    "a deer standing in a misty meadow at dawn",
    "a vintage car parked in front of a neon diner",
    "an empty swimming pool covered in autumn leaves",
    "a terraced rice field in the mountains after rain",
    "a potter's hands shaping clay on a spinning wheel",
    "a waterfall hidden in a tropical rainforest",
    "a chess game in progress on a park bench",
    "an ice cream truck on a hot summer street",
    "a wooden pier disappearing into thick fog",
    "a candlelit dinner table set for two",
    "a flock of flamingos standing in shallow water",
    "a weathered fisherman mending nets on a dock",
    "a child flying a kite on a windy beach",
]

MULTI = [
    "a cat and a dog sharing a blanket by the fireplace",
    "a teacup, a pocket watch and a folded letter on a desk",
    "a horse and a goat standing together in a muddy field",
    "a violin resting on a chair next to an open music book",
    "a bicycle leaning against a wall beside a potted fern",
    "an astronaut and a penguin shaking hands on an ice floe",
    "a fox, a rabbit and a hedgehog having a picnic",
    "a laptop, a notebook and a mug of tea on a messy desk",
    "a giraffe and an elephant drinking from the same river",
    "a lamp, a globe and a stack of maps on a wooden shelf",
    "a robot watering flowers next to a sleeping dog",
    "a baker and a firefighter eating lunch on a bench",
    "a squirrel stealing a cookie from a surprised owl",
    "a red scarf, a pair of gloves and a wool hat on a coat rack",
    "a kayak and a canoe tied to the same dock",
    "a grandmother teaching her grandson to knit",
    "a snowman wearing sunglasses next to a beach umbrella",
    "a turtle racing a snail on a garden path",
    "a guitar, a drum and a trumpet leaning against a stage wall",
    "a chef and a cat staring at a boiling pot",
    "a pelican and a seagull arguing over a fish",
    "a blue car and a yellow truck parked side by side",
    "a bear reading a newspaper while a raccoon pours coffee",
    "a crown and a sword lying on a velvet cushion",
    "a lighthouse keeper and his dog watching a passing ship",
    "a strawberry, a kiwi and a slice of orange on a white plate",
    "a koala and a kangaroo waiting at a bus stop",
    "a typewriter, a candle and a crumpled page in a dark room",
    "two friends sharing an umbrella in the rain",
    "a knight and a dragon playing cards in a tavern",
]

NUMBERS = ["two", "three", "four", "five", "six", "seven"]
# (plural noun, setting) pairs chosen so every combination reads naturally.
COUNTED = [
    ("red balloons", "tied to a garden fence"),
    ("ducks", "swimming in a line across a pond"),
    ("candles", "burning on a birthday cake"),
    ("apples", "in a woven basket"),
    ("books", "stacked on a bedside table"),
    ("sailboats", "on a calm blue bay"),
    ("coffee cups", "on a cafe counter"),
    ("penguins", "standing on an iceberg"),
    ("lemons", "on a blue plate"),
    ("paper lanterns", "hanging over a narrow alley"),
    ("horses", "running across a snowy field"),
    ("pumpkins", "on a porch step"),
    ("birds", "sitting on a telephone wire"),
    ("wine glasses", "on a silver tray"),
    ("kittens", "sleeping in a cardboard box"),
    ("pencils", "in a glass jar"),
    ("stars", "drawn on a chalkboard"),
    ("umbrellas", "leaning against a doorway"),
    ("donuts", "in an open pink box"),
    ("cows", "grazing on a green hillside"),
    ("chairs", "around a round kitchen table"),
    ("wind turbines", "on a ridge at sunset"),
    ("eggs", "in a frying pan"),
    ("rubber ducks", "floating in a bathtub"),
    ("hot air balloons", "over a valley at dawn"),
    ("keys", "on a metal ring"),
    ("goldfish", "in a round glass bowl"),
    ("traffic cones", "on an empty road"),
    ("lit windows", "in a dark apartment building"),
    ("seashells", "arranged in a row on wet sand"),
]
COUNTED_EXTRA = [
    "exactly one red sock among a pile of white socks",
    "a hand holding up three fingers",
    "a clock showing a quarter past seven",
    "a single die showing the number five",
    "twelve eggs in a carton, one of them brown",
]

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["cube", "sphere", "cone", "cylinder", "pyramid", "ring"]
RELATIONS = [
    "on top of",
    "underneath",
    "to the left of",
    "to the right of",
    "behind",
    "in front of",
    "next to",
]
SPATIAL_SCENES = [
    "a cat sitting under a wooden table",
    "a bird perched on top of a snowman's hat",
    "a mug to the left of a laptop and a plant to the right of it",
    "a ladder leaning against a tree with a cat at the top",
    "a boat beneath a stone bridge",
    "a small house at the bottom of a huge waterfall",
    "a ball inside a glass jar on a windowsill",
    "a dog hiding behind a curtain with only its tail showing",
    "a moon rising directly above a church tower",
    "a spoon resting inside an empty teacup",
    "a person standing between two tall cypress trees",
    "a kite stuck in the branches above a park bench",
    "a red door at the end of a long white corridor",
    "a mirror reflecting a vase that stands behind the viewer",
    "a tiny boat floating inside a giant teacup",
]

TEXT = [
    'a neon sign that says "OPEN LATE" above a diner door',
    'a chalkboard menu reading "Soup of the Day: Tomato"',
    'a birthday cake with "Happy 80th, Rosa" written in blue icing',
    'a wooden signpost pointing to "Beach" and "Village"',
    'a coffee mug printed with the words "Monday Again"',
    'a street sign that reads "Maple Avenue"',
    'a vintage travel poster with the title "Visit the Moon"',
    'a protest placard saying "Save the Bees"',
    'a book cover titled "The Quiet Orchard" in gold letters',
    'a license plate that reads "GO 2 MARS"',
    'the word "hello" written in the sand at the edge of the sea',
    'a handwritten note on the fridge that says "Buy milk!"',
    'a storefront window with "Closed for Lunch" painted on the glass',
    'a t-shirt with the slogan "Plants Are Friends"',
    'a cardboard box labeled "FRAGILE - THIS SIDE UP"',
    'a train station board showing "Platform 4 - Delayed"',
    'a cross-stitch sampler that reads "Home Sweet Home"',
    'a rocket with "EXPLORER" painted down its side',
    'an old map with "Here Be Dragons" written near the edge',
    'a cookie decorated with the letters "A B C"',
    'a graffiti mural spelling "DREAM BIG" in bubble letters',
    'a bakery sign reading "Fresh Bread Daily"',
    'a road painted with the word "SLOW" in white letters',
    'a gravestone in a cartoon style engraved "Here Lies My Diet"',
    'a scoreboard showing "HOME 3 - AWAY 2"',
]

STYLE_SUBJECTS = [
    "a lighthouse on a rocky coast",
    "a fox in a snowy forest",
    "a bustling city street",
    "a bowl of fruit",
    "a portrait of an elderly sailor",
    "a cat asleep on a windowsill",
    "a mountain lake at dawn",
    "a steam locomotive crossing a bridge",
    "a dancer mid-leap",
    "a crowded tea house",
    "a koi pond in autumn",
    "a knight on horseback",
    "a field of tulips",
    "a robot reading a book",
    "a jazz band on a small stage",
    "an owl in the moonlight",
    "a fishing boat in a storm",
    "a market square in the rain",
    "a hummingbird at a flower",
    "a castle on a cliff",
]
STYLES = [
    "as a watercolor painting",
    "as a ukiyo-e woodblock print",
    "in the style of Vincent van Gogh",
    "as a pencil sketch",
    "in pixel art",
    "as a stained glass window",
    "in the style of a 1950s travel poster",
    "as a low-poly 3D render",
    "as an oil painting in the style of Rembrandt",
    "as a children's book illustration",
    "in the style of Studio Ghibli",
    "as a charcoal drawing",
    "as a claymation still",
    "in art nouveau style",
    "as a cyberpunk digital painting",
    "as a black and white film photograph",
    "in the style of Claude Monet",
    "as a paper cut-out collage",
    "as an isometric video game scene",
    "as a mosaic of tiny tiles",
]

ABSTRACT = [
    "the feeling of nostalgia",
    "time slipping away",
    "the sound of silence",
    "hope after a long winter",
    "the weight of a difficult decision",
    "loneliness in a crowded city",
    "the concept of infinity",
    "a memory that is fading",
    "the joy of a first snowfall",
    "freedom",
    "the tension before a storm",
    "gratitude",
    "the moment you fall asleep",
    "an idea being born",
    "the balance between order and chaos",
    "curiosity",
    "the passage of the seasons in a single image",
    "what happiness smells like",
    "a dream about flying that turns into falling",
    "the boundary between day and night",
    "forgiveness",
    "the anxiety of waiting for news",
    "a conversation without words",
    "the echo of a forgotten song",
    "calm",
]

COMPLEX = [
    "a cozy reading nook by a rainy window, with a cat curled on a knitted blanket, "
    "a steaming mug of cocoa and a stack of old paperbacks, warm lamp light",
    "an underwater city with glass domes, schools of silver fish swimming between the "
    "towers and divers riding giant sea turtles",
    "a Victorian inventor's workshop full of brass gears, half-built automatons, "
    "blueprints pinned to the walls and a glowing machine in the center",
    "a busy train platform in 1920s Paris, travelers with suitcases, a newspaper boy, "
    "steam rising from a black locomotive",
    "a floating island with a waterfall pouring off its edge into the clouds below, "
    "a small cottage and a windmill on top",
    "a panda chef flipping pancakes in a tiny food truck while a line of forest animals "
    "waits patiently outside",
    "a medieval map of an imaginary kingdom with mountains, rivers, sea monsters and "
    "a compass rose in the corner",
    "a greenhouse on Mars with astronauts tending tomato plants, the red desert visible "
    "through the glass walls",
    "an old woman feeding pigeons in a snowy square while children build a snowman "
    "behind her and a tram passes in the background",
    "a detailed cross-section of an anthill showing tunnels, chambers full of eggs, "
    "a queen ant and workers carrying leaves",
    "a rooftop party at night with string lights, a DJ, people dancing and a full moon "
    "over the skyline",
    "a library where the books fly like birds between the shelves and a librarian "
    "catches them with a butterfly net",
    "a street food stall in Bangkok at night, a cook tossing noodles in a flaming wok, "
    "motorbikes blurred in the background",
    "a fantasy tavern interior with a dwarf arm-wrestling an orc, a bard playing a lute "
    "and a fire crackling in a stone hearth",
    "a kitchen table covered in the aftermath of a baking disaster: flour everywhere, "
    "cracked eggs, a collapsed cake and a guilty-looking dog",
    "a glass terrarium containing a tiny rainforest with a waterfall, a rope bridge "
    "and a miniature explorer",
    "two astronauts playing chess on the surface of the moon with Earth rising behind them",
    "a crowded bookshop staircase where every step is made of stacked books",
    "a submarine window view of a giant squid wrapping its arms around a sunken ship",
    "a cyclist riding along a coastal road at golden hour, the sea on the left and "
    "lemon groves on the right",
    "a museum gallery at night where the painted figures have stepped out of their frames",
    "a wedding in a forest clearing with fairy lights in the trees and a deer watching "
    "from the edge",
    "a rainy Tokyo crossing seen from above, hundreds of transparent umbrellas",
    "a blacksmith hammering a glowing sword in a dark forge, sparks flying",
    "an orchestra of cats in tiny tuxedos performing in a grand concert hall",
    "a picnic on a hill overlooking a valley, a checkered blanket, a wicker basket, "
    "a bottle of lemonade and two bicycles lying in the grass",
    "a steampunk airship docking at a tower above the clouds, passengers waving from the deck",
    "a child's bedroom at night where the toys are having a secret meeting under a flashlight",
    "a lighthouse made of ice standing in a frozen sea under the northern lights",
    "a split image: the left half a busy city in summer, the right half the same street "
    "buried in snow",
]


def _a(word: str) -> str:
    """The indefinite article for ``word`` (enough for the colour names used here)."""
    return "an" if word[0] in "aeiou" else "a"


def counting() -> list[str]:
    """Each counted object once, its number cycling through NUMBERS."""
    out = [f"{NUMBERS[i % len(NUMBERS)]} {noun} {where}" for i, (noun, where) in enumerate(COUNTED)]
    return out + COUNTED_EXTRA


def spatial() -> list[str]:
    """Coloured shapes in every relation (distinct colours, distinct shapes), plus scenes."""
    rng = random.Random(SEED)
    out = []
    for i in range(20):
        c1, c2 = rng.sample(COLORS, 2)
        s1, s2 = rng.sample(SHAPES, 2)
        out.append(f"{_a(c1)} {c1} {s1} {RELATIONS[i % len(RELATIONS)]} {_a(c2)} {c2} {s2}")
    return out + SPATIAL_SCENES


def styled() -> list[str]:
    """Every subject in two different styles (offsets keep the pairs varied)."""
    n = len(STYLES)
    return [
        f"{subject} {STYLES[(i * 7 + k * 11) % n]}"
        for i, subject in enumerate(STYLE_SUBJECTS)
        for k in range(2)
    ]


def build() -> list[str]:
    groups = [SIMPLE, DESCRIBED, MULTI, counting(), spatial(), TEXT, styled(), ABSTRACT, COMPLEX]
    prompts = [p for group in groups for p in group]
    dupes = {p for p in prompts if prompts.count(p) > 1}
    if dupes:
        raise SystemExit(f"duplicate prompts: {sorted(dupes)}")
    bad = [p for p in prompts if p != p.strip() or "\n" in p or "\t" in p]
    if bad:
        raise SystemExit(f"prompts with stray whitespace: {bad}")
    random.Random(SEED).shuffle(prompts)
    return prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    text = "\n".join(build()) + "\n"
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} prompts to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
