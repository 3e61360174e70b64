-- Incidents by risk (issue 16): `GET /api/v1/incidents?sort=risk_score` orders by the score
-- stored in the document; an index on the same expression keeps that a walk of the index
-- instead of a sort of every incident. Documents without a score (written before this)
-- sort last.
CREATE INDEX incidents_risk ON incidents (json_extract(doc, '$.risk_score'));
