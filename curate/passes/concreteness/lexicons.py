"""Word lists for caption concreteness, written from general knowledge of English and of web
alt-text (stock photos, shop listings, news photos, blogs, social posts); none is derived from
any labelled caption set. All entries are lower case."""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words: excluded from the norm averages ("content words" are everything else).
STOPWORDS = _words("""
a an the this that these those there here some any each every all both either neither no nor
not and or but so yet if then than because while when where whence whether which who whom
whose what why how as at by for from in into of off on onto out over to toward towards under
up upon with within without about above across after against along among around before behind
below beneath beside besides between beyond down during except inside near outside past since
through throughout till until via per amid atop next
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
himself she her hers herself it its itself they them their theirs themselves one ones
is am are was were be been being have has had having do does did doing will would shall should
can could may might must ought let
i'm i've i'd i'll we're we've we'd we'll you're you've you'd you'll he's she's it's they're
they've they'd they'll that's there's here's what's let's
very so too also just only even still quite rather really much many more most less least such
own same other another again ever never always often once
two three four five six seven eight nine ten
""")

# Personal deixis: the writer or the reader is in the text, so it talks to or about people
# rather than describing a picture ("my favourite memories", "your guide to ...").
FIRST_PERSON = _words("""i me my mine myself we us our ours ourselves i'm i've i'd i'll we're
we've we'd we'll""")
SECOND_PERSON = _words("you your yours yourself yourselves you're you've you'd you'll u ur")

# Evaluation and affect that no picture shows. Adjectives common in plain visual descriptions
# (beautiful, pretty, cute, lovely, happy, delicious) are deliberately left out.
OPINION = _words("""best better great greatest amazing awesome perfect favorite favourite
favorites favourites love loved loving loves incredible fantastic wonderful excellent ultimate
reliable premium ideal inspiring inspiration inspirational unique epic worst terrible awful
horrible nice good popular famous cool fun funny proud grateful blessed thankful exciting
excited interesting important must-have recommended stunning impressive brilliant
outstanding remarkable unforgettable""")

# Verbs that open an instruction or an advert ("buy a domain name", "click to enlarge").
IMPERATIVE = _words("""buy click get shop download learn discover check find see visit order
subscribe read join call save try make create take enjoy explore browse follow share
contact add start use keep give register grab meet choose compare hire apply
donate vote win sell rent""")

# Openers of questions, how-tos and exclamations ("how to ...", "why ...", "what a day").
QUESTION_OPENERS = _words("how why what when who whose which where")
LISTICLE = _words("tips ideas ways reasons things guide tutorial steps secrets facts lessons")

# Irrealis and narration: modals, conditionals and past tense of telling point away from what
# a picture can show ("will", "if", "said", "was").
IRREALIS = _words("will would shall should could can cannot must may might if unless")
NARRATIVE = _words("""was were had been said says told announced according reported reports
stated claims claimed""")
NEGATION = _words("not no never nothing none nobody nowhere neither nor")

# Commerce and web pages: shop listings and site furniture rather than scene descriptions.
COMMERCE_WEB = _words("""sale sales shipping buy price prices priced discount discounts deal deals
order orders shopping online wholesale retail cheap coupon coupons warranty
pcs pc pk xs xl xxl xxxl xxxxl cm mm inch inches oz lb lbs kg ml
website websites blog blogs pinterest facebook twitter instagram youtube tiktok app apps
ebook pdf download downloads review reviews podcast episode newsletter login homepage domain
template templates tutorial subscribe click free""")

# Signs that a caption describes a depiction. "photo of" & co. need the following "of".
DEPICTION_HEADS = _words("photo photograph picture image view portrait drawing painting "
                         "sketch illustration close-up closeup shot")
DEPICTION_WORDS = _words("""closeup close-up silhouette silhouettes aerial isolated backdrop
background foreground""")
POSTURE = _words("""sitting standing walking holding wearing lying laying running riding playing
posing smiling looking hanging flying swimming eating drinking jumping sleeping climbing
carrying covered surrounded filled stacked parked decorated dressed leaning floating growing
perched""")
ARTICLE_OPENERS = _words("a an two three four five several many group")
