-- Passive advice per floor: agents speak up unasked on the floor's events unless an admin
-- turned it off for the project.
ALTER TABLE projects ADD COLUMN passive_advice INTEGER NOT NULL DEFAULT 1;
