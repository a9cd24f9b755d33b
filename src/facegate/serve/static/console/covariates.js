// The console's view of decisions per photo-covariate bin (GET /admin/v1/covariates): which kinds of photo
// (dark, small face, turned head, blurred) the verifier sends back or rejects more often than the others.
const MIN_CHECKINS = 30;
const DEPARTS = 2;

const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  row.appendChild(td);
}

export async function loadCovariates(api, body) {
  const data = await api("GET", "/admin/v1/covariates");
  body.replaceChildren();
  let rows = 0;
  for (const [covariate, bins] of Object.entries(data)) {
    for (const [bin, c] of Object.entries(bins)) {
      const tr = document.createElement("tr");
      const departs = c.total >= MIN_CHECKINS && c.refused !== null && c.others_refused !== null
        && c.refused >= DEPARTS * c.others_refused && c.refused > 0;
      if (departs) tr.className = "departs";
      cell(tr, covariate.replace("_", " "));
      cell(tr, bin);
      cell(tr, c.total);
      cell(tr, c.accept);
      cell(tr, c.retry);
      cell(tr, c.reject);
      cell(tr, pct(c.refused));
      cell(tr, pct(c.others_refused));
      cell(tr, departs ? "departs" : "");
      body.appendChild(tr);
      rows += 1;
    }
  }
  if (!rows) {
    const tr = document.createElement("tr");
    cell(tr, "(no check-ins yet)");
    body.appendChild(tr);
  }
}
