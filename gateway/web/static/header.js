// Pages with nothing of their own to do (the 404 page): the header only.
import { renderHeader } from "./ui.js";

renderHeader();
