"""The labeled task set of the ensemble evaluation, and the script that writes it.

    .venv/bin/python -m tests.benchmarks.eval.tasks     # rewrites tests/benchmarks/eval/tasks.jsonl

Three kinds of item, a hundred each, written for this project (no item comes from a published
data set): the sentiment of a short review (positive / negative), a yes/no question of general
knowledge whose answer is not in dispute, and one addition or subtraction of single- or two-digit
numbers. Reviews and questions are written out below; the sums are drawn by a random generator
with a fixed seed, so this script writes the same file every time (tests/benchmarks/
test_ensemble_eval.py checks that the committed file is what it writes).

Each line of tasks.jsonl is one item: {"id", "kind", "prompt", "answer", "allowed"}; `allowed` is
the list of answers a reply may give (for arithmetic: null, any whole number). Within each kind the
labels alternate (positive, negative, ...; yes, no, ...; addition, subtraction, ...), so the first
N items of a kind, what `--limit N` takes, are balanced whenever N is even.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

TASKS_FILE = Path(__file__).with_name("tasks.jsonl")
KINDS = ("sentiment", "fact", "arithmetic")
SEED = 15  # the issue that asked for this evaluation; any fixed number would do
ARITHMETIC_ITEMS = 100

SENTIMENT_LABELS = ("positive", "negative")
FACT_LABELS = ("yes", "no")


@dataclass(frozen=True)
class Task:
    id: str
    kind: str  # one of KINDS
    prompt: str  # the review, the question, or the sum, without any instruction
    answer: str  # the right answer, normalized (lower case; a number in decimal)
    allowed: tuple[str, ...] | None  # the answers a reply may give; None: any whole number

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "prompt": self.prompt, "answer": self.answer,
                "allowed": list(self.allowed) if self.allowed is not None else None}

    @classmethod
    def from_json(cls, data: dict) -> Task:
        allowed = data["allowed"]
        return cls(data["id"], data["kind"], data["prompt"], data["answer"],
                   tuple(allowed) if allowed is not None else None)


POSITIVE_REVIEWS = (
    "The pasta was perfectly cooked and the staff made us feel at home. We will be back next week.",
    "This phone's battery lasts two full days and the screen is gorgeous. Best purchase I made this year.",
    "A moving film with brilliant acting; I left the cinema smiling.",
    "The hotel room was spotless, quiet, and the breakfast was generous.",
    "These headphones sound amazing and stay comfortable for hours.",
    "Fast delivery, sturdy packaging, and the blender works like a charm.",
    "I could not put this novel down. The characters felt real and the ending was wonderful.",
    "Our tour guide was funny and knowledgeable; the day flew by.",
    "The new update made the app faster and much easier to use.",
    "Great value for money: the jacket is warm, light and well stitched.",
    "The plumber arrived on time, fixed the leak in twenty minutes and charged a fair price.",
    "Delicious coffee, friendly baristas and a cozy corner to read in.",
    "This board game is a hit with the whole family; we play it every weekend.",
    "The yoga class was calm, well paced and left me feeling refreshed.",
    "Setup took two minutes and the printer has worked flawlessly since.",
    "The concert was incredible, and the band played every song I hoped for.",
    "My dog loves these treats and they never upset his stomach.",
    "Excellent customer service: they replaced the broken lamp without any fuss.",
    "The museum's new exhibit is fascinating and beautifully lit.",
    "Comfortable shoes that held up on a ten-mile hike. Highly recommend.",
    "The sushi was fresh, the rice was perfect, and the prices were reasonable.",
    "A clever, funny podcast that I look forward to every Monday.",
    "The bike shop tuned my bicycle perfectly and it rides like new.",
    "This vacuum picks up everything, even pet hair, and it is surprisingly quiet.",
    "The teacher explained every step clearly; I finally understand fractions.",
    "Lovely little bakery. The croissants are flaky and still warm in the morning.",
    "The game's story is gripping and the music is beautiful. Worth every penny.",
    "Check-in was quick, the pool was clean, and the view from the balcony was stunning.",
    "The kitchen knife is sharp, well balanced and a joy to cook with.",
    "I love this tent: it went up in five minutes and kept us dry through a storm.",
    "The documentary was eye-opening and very well made.",
    "Our waiter was attentive and the dessert was the best I have had in years.",
    "The tablet is light, fast, and the battery easily lasts a long flight.",
    "A charming, heartfelt play with a talented young cast.",
    "The gym is clean, never crowded, and the trainers are really helpful.",
    "This cookbook has simple recipes that turn out well every single time.",
    "The train was on time, the seats were comfy and the wifi worked the whole way.",
    "Gorgeous garden, peaceful paths, and plenty of benches. A perfect afternoon.",
    "The movers were careful with our furniture and nothing was scratched.",
    "The soup was rich and flavorful, and the bread was baked that morning.",
    "These running socks keep my feet dry and blister free. I bought five more pairs.",
    "Brilliant sequel: funnier than the first film and just as exciting.",
    "The dentist was gentle and patient, and the visit was painless.",
    "The desk was easy to assemble, it is solid wood, and it looks great in my office.",
    "This language app keeps me motivated and my Spanish has improved a lot.",
    "Wonderful stay at the cabin: quiet, warm and spotless, with a view of the lake.",
    "The smartwatch tracks my runs accurately and the strap is very comfortable.",
    "Kind staff, a short wait, and the doctor took time to answer all my questions.",
    "The pizza had a crisp crust and plenty of fresh toppings. Our new favorite place.",
    "This album is a masterpiece; every track is a delight.",
)

NEGATIVE_REVIEWS = (
    "The food was cold, the waiter was rude, and we waited an hour for the bill.",
    "The phone overheats constantly and the battery dies before lunch.",
    "A boring, predictable film. I nearly fell asleep halfway through.",
    "The hotel room smelled of smoke and the shower had no hot water.",
    "These headphones broke after a week, and the sound was tinny anyway.",
    "The package arrived two weeks late and the blender leaked the first time I used it.",
    "I gave up on this novel after fifty pages; the plot goes nowhere.",
    "Our tour guide was late, bored, and rushed us through everything.",
    "Since the update the app crashes every time I open it.",
    "The jacket fell apart at the seams after two washes. A waste of money.",
    "The plumber never showed up and nobody answered the phone.",
    "Burnt coffee, sticky tables and a very unfriendly barista.",
    "The board game's rules are confusing and the pieces are flimsy cardboard.",
    "The class was overcrowded and the instructor ignored the beginners.",
    "The printer jams on every other page and the ink runs out in days.",
    "Terrible sound at the concert; we could barely hear the singer.",
    "My dog got sick after eating these treats. Never again.",
    "Customer service hung up on me twice and refused a refund.",
    "The exhibit was tiny, overpriced, and half the rooms were closed.",
    "These shoes gave me blisters on the first walk and the sole is already peeling.",
    "The sushi tasted old and the rice was hard. I felt ill afterwards.",
    "The podcast hosts ramble for an hour and never get to the point.",
    "The bike shop charged me twice the quote and the brakes still squeak.",
    "This vacuum is loud and weak, and the cord is far too short.",
    "The teacher was disorganized and never returned our homework.",
    "Stale bread and dry pastries, and they were rude when I complained.",
    "The game is full of bugs and crashed three times in the first hour.",
    "Dirty pool, broken air conditioning and a noisy road right under the window.",
    "The knife was dull out of the box and the handle cracked within a month.",
    "The tent leaked at the first drop of rain and one pole snapped.",
    "The documentary was one-sided and dull, a real disappointment.",
    "We waited forty minutes for a cold, greasy burger. Awful.",
    "The tablet is painfully slow and the screen scratches easily.",
    "The play dragged on for three hours and the actors forgot their lines.",
    "The gym is filthy, half the machines are broken, and it is always packed.",
    "None of the recipes in this cookbook worked; every cake sank.",
    "The train was cancelled without notice and we were stranded for hours.",
    "The garden was overgrown, the paths were muddy and the café was closed.",
    "The movers broke our mirror and scratched the table, then blamed us.",
    "The soup was watery and far too salty, and the bread was stale.",
    "These socks got holes after a single run. Very poor quality.",
    "A lazy sequel that repeats the first film's jokes, badly.",
    "The dentist was rough and rushed, and the bill had hidden charges.",
    "The desk arrived with missing screws and wobbles no matter what I do.",
    "This language app keeps freezing and the lessons are full of mistakes.",
    "The cabin was freezing, the roof leaked and there were mice in the kitchen.",
    "The smartwatch loses its connection all the time and the step count is way off.",
    "We waited three hours to be seen and the nurse was dismissive.",
    "Soggy pizza with hardly any cheese, and it arrived an hour late.",
    "This album is a tuneless mess; I could not finish it.",
)

YES_QUESTIONS = (
    "Is water made of hydrogen and oxygen?",
    "Is the Sun a star?",
    "Do spiders have eight legs?",
    "Is Paris the capital of France?",
    "Is the Pacific the largest ocean on Earth?",
    "Does a week have seven days?",
    "Is ice frozen water?",
    "Do fish live in water?",
    "Is Mount Everest the highest mountain above sea level?",
    "Is the Moon a natural satellite of the Earth?",
    "Do plants need sunlight to make their food?",
    "Does a triangle have three sides?",
    "Is Tokyo in Japan?",
    "Do bees make honey?",
    "Does the heart pump blood around the body?",
    "Is a whale a mammal?",
    "Does a year have twelve months?",
    "Is gold a metal?",
    "Is English written with the Latin alphabet?",
    "Do birds have feathers?",
    "Is the Earth roughly round?",
    "Is Canada north of the United States?",
    "Does water boil at 100 degrees Celsius at sea level?",
    "Is the Nile a river in Africa?",
    "Does a square have four equal sides?",
    "Is Mars called the Red Planet?",
    "Do cows eat grass?",
    "Is a piano a musical instrument?",
    "Is snow cold?",
    "Is Rome in Italy?",
    "Do humans need oxygen to live?",
    "Is the Amazon rainforest in South America?",
    "Is a kilometre longer than a metre?",
    "Do lemons taste sour?",
    "Does the Atlantic Ocean lie between Europe and North America?",
    "Do cats have whiskers?",
    "Is Jupiter the largest planet in the Solar System?",
    "Is an hour sixty minutes long?",
    "Is Spanish spoken in Mexico?",
    "Do trees have roots?",
    "Is salt used to season food?",
    "Is Berlin the capital of Germany?",
    "Is a carrot a vegetable?",
    "Does the Earth orbit the Sun?",
    "Is a penguin a bird?",
    "Is Antarctica mostly covered by ice?",
    "Do cows produce milk?",
    "Is the number ten even?",
    "Do frogs lay eggs?",
    "Is Sydney a city in Australia?",
)

NO_QUESTIONS = (
    "Is the Sun a planet?",
    "Do spiders have six legs?",
    "Is Madrid the capital of France?",
    "Does a week have ten days?",
    "Is the Moon made of cheese?",
    "Is a shark a mammal?",
    "Is ice hotter than boiling water?",
    "Does a triangle have five sides?",
    "Is Tokyo in Brazil?",
    "Do cows lay eggs?",
    "Is the heart located in the foot?",
    "Is a whale a fish?",
    "Does a year have twenty months?",
    "Is gold a gas at room temperature?",
    "Do birds have gills?",
    "Is Canada south of Mexico?",
    "Does water boil at 10 degrees Celsius at sea level?",
    "Is the Nile a river in Australia?",
    "Is Mars the closest planet to the Sun?",
    "Do horses have wings?",
    "Is a guitar a vegetable?",
    "Is snow hot?",
    "Is Rome the capital of Spain?",
    "Can humans breathe underwater without any equipment?",
    "Is a metre longer than a kilometre?",
    "Are lemons blue?",
    "Is the Pacific Ocean in the middle of Africa?",
    "Do snakes have fur?",
    "Is Jupiter smaller than the Earth?",
    "Is an hour ninety minutes long?",
    "Is French the main language of Japan?",
    "Is a rock alive?",
    "Does sugar taste salty?",
    "Is Berlin in Canada?",
    "Is a potato a fruit?",
    "Does the Sun orbit the Earth?",
    "Can penguins fly?",
    "Is the Sahara desert covered in ice?",
    "Is the number seven even?",
    "Do chickens have four legs?",
    "Is London in Germany?",
    "Is a mouse bigger than an elephant?",
    "Is the sky green on a clear day?",
    "Can trees walk from place to place?",
    "Is glass made mainly of chocolate?",
    "Is the Earth the largest planet in the Solar System?",
    "Is the Atlantic Ocean a desert?",
    "Are ripe bananas usually purple?",
    "Is the Amazon River in Europe?",
    "Is a day forty hours long?",
)


def _alternate(first: list[str], second: list[str]) -> list[tuple[str, int]]:
    """The two lists interleaved, each text with the index (0 or 1) of its list."""
    return [pair for a, b in zip(first, second, strict=True) for pair in ((a, 0), (b, 1))]


def _shuffled(texts: tuple[str, ...], rng: random.Random) -> list[str]:
    # The lists above were written in pairs on one subject (a good restaurant, a bad one); shuffled,
    # a short --limit does not read a positive and a negative review of the same thing side by side.
    out = list(texts)
    rng.shuffle(out)
    return out


def arithmetic(rng: random.Random, count: int = ARITHMETIC_ITEMS) -> list[Task]:
    """`count` distinct sums: additions and subtractions alternately, single-digit operands in
    the first of every two pairs and two-digit ones in the second; a subtraction never goes below
    zero."""
    tasks: list[Task] = []
    seen: set[str] = set()
    while len(tasks) < count:
        index = len(tasks)
        add = index % 2 == 0
        low, high = (1, 9) if (index // 2) % 2 == 0 else (10, 99)
        a, b = rng.randint(low, high), rng.randint(low, high)
        if not add and a < b:
            a, b = b, a
        prompt = f"What is {a} {'+' if add else '-'} {b}?"
        if prompt in seen:
            continue
        seen.add(prompt)
        tasks.append(Task(f"arithmetic-{index + 1:03d}", "arithmetic", prompt, str(a + b if add else a - b), None))
    return tasks


def build() -> list[Task]:
    """The whole task set, the same on every call."""
    rng = random.Random(SEED)
    reviews = _alternate(_shuffled(POSITIVE_REVIEWS, rng), _shuffled(NEGATIVE_REVIEWS, rng))
    questions = _alternate(_shuffled(YES_QUESTIONS, rng), _shuffled(NO_QUESTIONS, rng))
    tasks = [Task(f"sentiment-{i + 1:03d}", "sentiment", text, SENTIMENT_LABELS[label], SENTIMENT_LABELS)
             for i, (text, label) in enumerate(reviews)]
    tasks += [Task(f"fact-{i + 1:03d}", "fact", text, FACT_LABELS[label], FACT_LABELS)
              for i, (text, label) in enumerate(questions)]
    return tasks + arithmetic(rng)


def render(tasks: list[Task]) -> str:
    return "".join(json.dumps(task.to_json(), ensure_ascii=False) + "\n" for task in tasks)


def load(path: Path = TASKS_FILE) -> list[Task]:
    """The task set as committed."""
    return [Task.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    TASKS_FILE.write_text(render(build()))
    print(f"wrote {TASKS_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
