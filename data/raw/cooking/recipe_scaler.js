/**
 * recipe_scaler.js - scale recipes to a different number of servings and convert kitchen units.
 *
 * Quantities are parsed from strings such as "1 1/2 cups", "250 g" or "3/4 tsp", multiplied by the
 * scaling factor and converted to the most readable unit. Weights are preferred for baking, where a
 * scale is more accurate than a measuring cup.
 */

"use strict";

/** Millilitres per volume unit (US customary cups and spoons). */
const VOLUME_ML = {
  tsp: 4.93,
  tbsp: 14.79,
  cup: 236.59,
  ml: 1,
  l: 1000,
};

/** Grams per weight unit. */
const WEIGHT_G = {
  g: 1,
  kg: 1000,
  oz: 28.35,
  lb: 453.59,
};

/** Approximate grams per US cup for common ingredients, used to turn volumes into weights. */
const GRAMS_PER_CUP = {
  "all-purpose flour": 125,
  "bread flour": 127,
  "granulated sugar": 200,
  "brown sugar": 213,
  butter: 227,
  water: 237,
  milk: 242,
  "rolled oats": 90,
};

/**
 * Parse a quantity such as "2", "1/2", "1 1/2" or "0.75" into a number.
 * @param {string} text
 * @returns {number}
 */
function parseQuantity(text) {
  const parts = text.trim().split(/\s+/);
  let total = 0;
  for (const part of parts) {
    if (part.includes("/")) {
      const [num, den] = part.split("/").map(Number);
      if (!den) throw new Error(`bad fraction: ${part}`);
      total += num / den;
    } else {
      const value = Number(part);
      if (Number.isNaN(value)) throw new Error(`bad quantity: ${text}`);
      total += value;
    }
  }
  return total;
}

/**
 * Split an ingredient line like "1 1/2 cup bread flour" into quantity, unit and name.
 * @param {string} line
 * @returns {{quantity: number, unit: string|null, name: string}}
 */
function parseIngredient(line) {
  const match = line.trim().match(/^([\d./\s]+)\s*([a-zA-Z]+)?\s*(.*)$/);
  if (!match) return { quantity: 1, unit: null, name: line.trim() };
  let unit = match[2] ? match[2].toLowerCase().replace(/s$/, "") : null;
  let name = match[3];
  if (unit && !(unit in VOLUME_ML) && !(unit in WEIGHT_G)) {
    // Not a unit after all: "2 eggs" -> quantity 2, name "eggs".
    name = `${match[2]} ${name}`.trim();
    unit = null;
  }
  return { quantity: parseQuantity(match[1]), unit, name };
}

/**
 * Scale one ingredient by a factor, converting cups of known ingredients to grams when asked.
 * @param {string} line
 * @param {number} factor
 * @param {{preferWeight?: boolean}} [options]
 * @returns {string}
 */
function scaleIngredient(line, factor, options = {}) {
  const { quantity, unit, name } = parseIngredient(line);
  let amount = quantity * factor;
  let outUnit = unit;
  if (options.preferWeight && unit && unit in VOLUME_ML && name in GRAMS_PER_CUP) {
    amount = (amount * VOLUME_ML[unit]) / VOLUME_ML.cup * GRAMS_PER_CUP[name];
    outUnit = "g";
  }
  return `${formatAmount(amount, outUnit)} ${outUnit ?? ""} ${name}`.replace(/\s+/g, " ").trim();
}

/**
 * Round to a precision that suits the unit: whole grams, quarter cups, and so on.
 * @param {number} amount
 * @param {string|null} unit
 * @returns {string}
 */
function formatAmount(amount, unit) {
  if (unit === "g" || unit === "ml") return String(Math.round(amount));
  if (unit === "cup" || unit === "tbsp" || unit === "tsp") {
    return String(Math.round(amount * 4) / 4);
  }
  return String(Math.round(amount * 100) / 100);
}

/**
 * Scale a whole recipe from one number of servings to another.
 * @param {string[]} lines ingredient lines
 * @param {number} fromServings
 * @param {number} toServings
 * @param {{preferWeight?: boolean}} [options]
 * @returns {string[]}
 */
function scaleRecipe(lines, fromServings, toServings, options = {}) {
  if (fromServings <= 0 || toServings <= 0) throw new Error("servings must be positive");
  const factor = toServings / fromServings;
  return lines.map((line) => scaleIngredient(line, factor, options));
}

/**
 * Baker's percentages: every ingredient as a percentage of the total flour weight.
 * @param {Object<string, number>} grams ingredient name -> grams
 * @returns {Object<string, number>}
 */
function bakersPercentages(grams) {
  const flour = Object.entries(grams)
    .filter(([name]) => name.includes("flour"))
    .reduce((sum, [, g]) => sum + g, 0);
  if (flour === 0) throw new Error("no flour in recipe");
  const out = {};
  for (const [name, g] of Object.entries(grams)) out[name] = Math.round((g / flour) * 1000) / 10;
  return out;
}

module.exports = { parseQuantity, parseIngredient, scaleIngredient, scaleRecipe, bakersPercentages };

if (require.main === module) {
  const recipe = ["2 cups bread flour", "1 1/2 tsp salt", "3/4 cup water", "2 eggs"];
  console.log(scaleRecipe(recipe, 4, 6, { preferWeight: true }).join("\n"));
}
