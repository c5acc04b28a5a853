"""Chat in, speakable items out: routing, the speech policy and its text
clean-up, moderator commands, the priority queue, outcomes and who is who."""
