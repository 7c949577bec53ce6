"""Emotionally worded English sentences, six per class, of similar length (about 2-4 s spoken).

Punctuation is part of the design: espeak-ng gives '?' a rising and '!' an
emphatic ending, so confused and surprised clips carry question intonation.
"""

from __future__ import annotations

from emotionthinker.labels import LABELS

SENTENCES: dict[str, tuple[str, ...]] = {
    "neutral": (
        "The train to the city leaves at nine fifteen every morning.",
        "Please put the folders back on the second shelf of the cabinet.",
        "The report lists the figures for the last three quarters.",
        "We moved the weekly meeting from Tuesday to Thursday afternoon.",
        "The library closes at six on weekdays and at noon on Saturday.",
        "Turn left at the corner and the office is on your right.",
    ),
    "happy": (
        "I got the job, this is the best day of my whole life!",
        "We won the final, I am so thrilled and proud of everyone!",
        "What a wonderful party, thank you all so very much!",
        "The sun is out and we are finally going to the beach!",
        "She said yes, we are getting married next spring!",
        "I love this song, it always puts me in a fantastic mood!",
    ),
    "sad": (
        "I miss her so much, the house feels empty without her.",
        "Nobody came to my birthday, I just sat there alone.",
        "We had to say goodbye to our old dog this morning.",
        "I tried my best, but it was never going to be enough.",
        "The letter said they are closing the school for good.",
        "I keep looking at his photo and wishing he were still here.",
    ),
    "angry": (
        "How dare you read my messages, that is completely unacceptable!",
        "I told you three times already, stop touching my things!",
        "You lied to me again, and I am sick of your excuses!",
        "Get out of my office right now and do not come back!",
        "This is the last time you break a promise to me!",
        "They cancelled my flight without a word and I am furious!",
    ),
    "contempt or disgust": (
        "Ugh, this soup smells rotten, I am not eating that.",
        "Honestly, your so called masterpiece is a pathetic little copy.",
        "There is mould all over the bread, that is revolting.",
        "Oh please, as if anyone here cares about your opinion.",
        "The bathroom was filthy, I could barely stand to look at it.",
        "He calls that effort? How utterly pathetic and lazy.",
    ),
    "confused": (
        "Wait, which platform did you say the train leaves from?",
        "I do not understand, why would the meeting be cancelled?",
        "Hold on, is this the right address or did we get lost?",
        "Sorry, what do you mean the file was never sent?",
        "Hmm, so do I press the red button or the green one?",
        "Why is my key not working, did they change the lock?",
    ),
    "whisper": (
        "Keep your voice down, the baby is finally asleep.",
        "Come a little closer, I have a secret to tell you.",
        "Quiet, the teacher is standing right behind the door.",
        "Do not tell anyone, but I found the hidden key.",
        "Slowly now, we have to sneak past the sleeping guard.",
        "Listen, I think someone is moving in the next room.",
    ),
    "surprise": (
        "Oh wow, you came all the way here just to see me?",
        "No way, you built this whole house by yourself?",
        "What, the concert is tonight? I had no idea at all!",
        "Really, you are moving to Japan next week?",
        "Oh my goodness, I never expected to see you here!",
        "You won the lottery? That is absolutely unbelievable!",
    ),
    "fear": (
        "Did you hear that noise? I think someone is inside the house.",
        "Please do not leave me here alone in the dark.",
        "The brakes are not working, we are going to crash!",
        "Something is moving in the bushes, I am really scared.",
        "Help me, the water is rising and I cannot get out!",
        "I am terrified of what the doctor will say tomorrow.",
    ),
}

assert tuple(SENTENCES) == LABELS, "one sentence list per label, in label order"
