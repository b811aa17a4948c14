// The movie form an admin fills in, to add a movie (admin page) or edit one (movie page).

import { api } from "./api.js";
import { el, fill, majorUnits, showFieldError, toMinorUnits } from "./ui.js";

/** Offer every cast member (the first 1000, by name) in the form's cast list. */
export async function loadCastOptions(form, selected = []) {
  const select = form.elements.castIds;
  const page = await api("GET", "/api/v1/casts", { query: { pageSize: 1000 }, auth: false });
  const casts = [...(page.casts || [])].sort((a, b) => a.name.localeCompare(b.name));
  fill(
    select,
    casts.map((cast) =>
      el(
        "option",
        { value: cast.id, selected: selected.includes(cast.id) },
        cast.nationality ? `${cast.name} (${cast.nationality})` : cast.name,
      ),
    ),
  );
}

/** Put a movie's values into the form. */
export function fillMovieForm(form, movie) {
  form.elements.title.value = movie.title || "";
  form.elements.plot.value = movie.plot || "";
  form.elements.genres.value = (movie.genres || []).join(", ");
  form.elements.currency.value = movie.price ? movie.price.currencyCode : "USD";
  form.elements.price.value = movie.price ? majorUnits(movie.price) : "";
  const ids = movie.castIds || [];
  for (const option of form.elements.castIds.options) {
    option.selected = ids.includes(option.value);
  }
}

/**
 * The movie the form describes, in the API's JSON, or null when the price cannot be
 * read (that error is then shown next to the price). Everything else is the server's to
 * judge: its field violations come back to the form.
 */
export function readMovieForm(form) {
  const currency = form.elements.currency.value.trim().toUpperCase();
  const priceText = form.elements.price.value;
  const movie = {
    title: form.elements.title.value.trim(),
    plot: form.elements.plot.value.trim(),
    genres: form.elements.genres.value.split(",").map((g) => g.trim()).filter(Boolean),
    castIds: [...form.elements.castIds.selectedOptions].map((o) => o.value),
  };
  if (priceText.trim() === "") {
    // Left out: the server says the price is required, next to this field.
    return movie;
  }
  const amountMinor = toMinorUnits(priceText, currency || "USD");
  if (amountMinor === null) {
    showFieldError(form, form.elements.price, "must be an amount such as 9.99");
    return null;
  }
  movie.price = { currencyCode: currency, amountMinor };
  return movie;
}
